/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The attestation flow shared by `nitride attest` (cmd-attest.c describes it) and `nitride fetch`
 * (cmd-fetch.c). See attest-flow.h.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <jose/jose.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "agent.h"
#include "attest-flow.h"
#include "core/encoding.h"
#include "core/jcs.h"
#include "core/jose-openssl.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "snp/provider.h"
#include "snp/report.h"
#include "token/ear.h"
#include "vhsm/client/vhsm-client.h"
#include "web/backoff.h"
#include "web/client.h"

int64_t attest_now_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t attest_remaining_ms(const AttestRun *run) {
    return run->deadline_ms - attest_now_ms();
}

/* Accepts https:// URLs, and http:// ones whose host is a loopback name or address. Returns the
 * URL without trailing '/' in *ret_base, or an exit code. */
int attest_check_url(const char *url, const char *option, char **ret_base) {
    static const char *const loopback[] = {"127.0.0.1", "[::1]", "localhost"};
    _cleanup_free_ char *base = NULL;
    const char *host;
    size_t len, host_len;
    bool plain = false;

    if (strncmp(url, "https://", 8) == 0)
        host = url + 8;
    else if (strncmp(url, "http://", 7) == 0) {
        host = url + 7;
        plain = true;
    } else {
        log_error("Invalid %s '%s': expected an https:// URL.", option, url);
        return NT_EXIT_USAGE;
    }
    host_len = strcspn(host, "/?#");
    if (host_len == 0 || memchr(host, '@', host_len) || strpbrk(url, " \t\r\n")) {
        log_error("Invalid %s '%s': expected https://HOST[:PORT][/PATH] without user "
                  "information or spaces.",
                  option, url);
        return NT_EXIT_USAGE;
    }
    if (host[host_len] == '?' || host[host_len] == '#') {
        log_error("Invalid %s '%s': a query or fragment is not allowed.", option, url);
        return NT_EXIT_USAGE;
    }
    if (plain) {
        /* The host part without its port: "[::1]:8443" -> "[::1]", "127.0.0.1:80" -> ... */
        size_t name_len = host_len;
        bool ok = false;
        if (host[0] == '[') {
            const char *close = memchr(host, ']', host_len);
            name_len = close ? (size_t)(close - host) + 1 : host_len;
        } else {
            const char *colon = memchr(host, ':', host_len);
            if (colon)
                name_len = (size_t)(colon - host);
        }
        if (name_len < host_len && host[name_len] != ':') {
            log_error("Invalid %s '%s': malformed host.", option, url);
            return NT_EXIT_USAGE;
        }
        for (size_t i = 0; i < ELEMENTSOF(loopback) && !ok; i++)
            ok = strlen(loopback[i]) == name_len && strncasecmp(host, loopback[i], name_len) == 0;
        if (!ok) {
            log_error("Refusing plain http:// to '%.*s': the evidence and the token would cross "
                      "the network unprotected. Use https:// (http:// is accepted only for "
                      "127.0.0.1, ::1 and localhost).",
                      (int)MIN(name_len, (size_t)256), host);
            return NT_EXIT_USAGE;
        }
        log_warning("Warning: plain http:// to the local host '%.*s': no TLS.", (int)name_len,
                    host);
    }
    base = strdup(url);
    if (!base) {
        log_oom();
        return NT_EXIT_IO;
    }
    len = strlen(base);
    while (len > 0 && base[len - 1] == '/')
        base[--len] = '\0';
    *ret_base = TAKE_PTR(base);
    return NT_EXIT_OK;
}

static void http_options(const AttestRun *run, NtHttpOptions *o) {
    int64_t left = MAX(attest_remaining_ms(run), (int64_t)1);
    *o = (NtHttpOptions){
        .ca_file = run->args->ca_file,
        .connect_timeout_ms = (long)MIN(left, (int64_t)ATTEST_CONNECT_TIMEOUT_MS),
        .timeout_ms = (long)left,
        .max_response = ATTEST_MAX_RESPONSE,
        /* One run talks to attestd three times and to kmsd once or more: the connections
         * (and their TLS sessions) are reused instead of a TCP and TLS handshake each. */
        .keep_alive = true,
    };
}

/* Classifies a transport failure: transient ones are retried, TLS and local ones are final. */
static int transport_failure(AttestRun *run, int r, const char *what, const char *url,
                             const NtHttpResponse *resp) {
    const char *detail = resp->error[0] ? resp->error : strerror(-r);
    if (r != -ECONNREFUSED)
        run->refused = 0;
    switch (-r) {
    case ECONNREFUSED:
        /* The host answered that nothing listens there: a service that is down, not a slow
         * network. With max_refused it is not waited for until the deadline. */
        if (run->max_refused > 0 && ++run->refused >= run->max_refused) {
            run->refused_out = true;
            snprintf(run->last_error, sizeof run->last_error,
                     "%s: '%s' refused the connection %u times in a row (nothing listens there: "
                     "the service is down or the URL names the wrong port)",
                     what, url, run->refused);
            log_debug("%s.", run->last_error); /* the caller that set max_refused reports it */
            return NT_EXIT_UNAVAILABLE;
        }
        snprintf(run->last_error, sizeof run->last_error, "%s: '%s' unreachable: %s", what, url,
                 detail);
        return STEP_RETRY;
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ECONNRESET:
    case EPIPE:
    case ENETUNREACH:
        snprintf(run->last_error, sizeof run->last_error, "%s: '%s' unreachable: %s", what, url,
                 detail);
        return STEP_RETRY;
    case EPROTO:
        /* A certificate that does not verify, a failed handshake, or an answer that is not HTTP:
         * none of them goes away by asking again. */
        if (strncmp(url, "https://", 8) == 0)
            log_error("%s: TLS or protocol failure talking to '%s': %s. The service's certificate "
                      "must chain to %s%s%s and name its host; there is no option to skip this "
                      "check.",
                      what, url, detail,
                      run->args->ca_file ? "the CA in '" : "the system trust store",
                      run->args->ca_file ? run->args->ca_file : "",
                      run->args->ca_file ? "' (--ca)" : " (or give --ca FILE)");
        else
            log_error("%s: protocol failure talking to '%s': %s.", what, url, detail);
        return NT_EXIT_IO;
    case EFBIG:
        log_error("%s: the answer from '%s' is larger than %u bytes.", what, url,
                  ATTEST_MAX_RESPONSE);
        return NT_EXIT_IO;
    default:
        log_error_errno(r, "%s: request to '%s' failed: %s", what, url, detail);
        return NT_EXIT_IO;
    }
}

/* One HTTP exchange with a JSON answer. STEP_OK with *ret_status and *ret_reply (a JSON object,
 * or NULL if the body is not one; run->retry_after_s from its Retry-After), or STEP_RETRY / an
 * exit code. */
int attest_exchange_at(AttestRun *run, const char *base, const char *bearer, const char *what,
                       const char *method, const char *path, const json_t *req, long *ret_status,
                       json_t **ret_reply) {
    _cleanup_free_ char *url = NULL, *body = NULL;
    NtHttpResponse resp = {};
    NtHttpOptions o;
    json_t *reply = NULL;
    int r;

    if (asprintf(&url, "%s%s", base, path) < 0) {
        url = NULL;
        log_oom();
        return NT_EXIT_IO;
    }
    if (req) {
        body = json_dumps(req, JSON_COMPACT);
        if (!body) {
            log_oom();
            return NT_EXIT_IO;
        }
    }
    http_options(run, &o);
    o.bearer_token = bearer;
    run->attempts++;
    run->retry_after_s = -1;
    log_debug("%s: %s %s", what, method, url);
    r = nt_http_request(&o, method, url, req ? "application/json" : NULL, body,
                        body ? strlen(body) : 0, &resp);
    if (r < 0) {
        r = transport_failure(run, r, what, url, &resp);
        nt_http_response_clear(&resp);
        return r;
    }
    run->refused = 0;
    if (resp.body && resp.body_len > 0) {
        reply = json_loadb((const char *)resp.body, resp.body_len, JSON_REJECT_DUPLICATES, NULL);
        if (reply && !json_is_object(reply)) {
            json_decref(reply);
            reply = NULL;
        }
    }
    *ret_status = resp.status;
    run->retry_after_s = resp.retry_after_s;
    *ret_reply = reply;
    nt_http_response_clear(&resp);
    return STEP_OK;
}

static int attest_exchange(AttestRun *run, const char *what, const char *method, const char *path,
                           const json_t *req, long *ret_status, json_t **ret_reply) {
    return attest_exchange_at(run, run->args->base, NULL, what, method, path, req, ret_status,
                              ret_reply);
}

const char *attest_jstr(const json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

static _Thread_local AttestRefusal last_refusal;

const AttestRefusal *attest_last_refusal(void) {
    return &last_refusal;
}

void attest_clear_refusal(void) {
    last_refusal = (AttestRefusal){0};
}

void attest_print_refusal(const char *service, const char *what, long status, const json_t *reply) {
    const char *error = attest_jstr(reply, "error"), *check = attest_jstr(reply, "check"),
               *rule = attest_jstr(reply, "rule"), *expected = attest_jstr(reply, "expected"),
               *found = attest_jstr(reply, "found");
    AttestRefusal *l = &last_refusal;
    snprintf(l->service, sizeof l->service, "%s", service);
    snprintf(l->rule, sizeof l->rule, "%s", rule ? rule : "");
    snprintf(l->check, sizeof l->check, "%s", check ? check : "");
    snprintf(l->error, sizeof l->error, "%s", error ? error : "(no reason given)");
    snprintf(l->expected, sizeof l->expected, "%s", expected ? expected : "");
    snprintf(l->found, sizeof l->found, "%s", found ? found : "");
    log_error("%s refused by %s (HTTP %ld): %s", what, service, status,
              error ? error : "(no reason given)");
    if (rule)
        log_error("  rule:     %s", rule);
    if (check)
        log_error("  check:    %s", check);
    if (expected)
        log_error("  expected: %s", expected);
    if (found)
        log_error("  found:    %s", found);
}

/* Maps a non-2xx answer: transient ones to STEP_RETRY (remembering why), refusals to their exit
 * code after printing the service's reason. */
static int attest_http_failure(AttestRun *run, const char *what, long status, const json_t *reply) {
    const char *error = attest_jstr(reply, "error"), *check = attest_jstr(reply, "check");

    if (status == 429 || status == 500 || status == 502 || status == 503 || status == 504) {
        snprintf(run->last_error, sizeof run->last_error, "%s: HTTP %ld%s%s%s%s%s", what, status,
                 error ? ": " : "", error ? error : "", check ? " (check " : "", check ? check : "",
                 check ? ")" : "");
        return status == 429 ? STEP_RETRY_SAME : STEP_RETRY;
    }
    if (status == 401 && check && streq(check, "nonce") && error && strstr(error, "expired")) {
        snprintf(run->last_error, sizeof run->last_error, "%s: the nonce expired", what);
        return STEP_RENONCE;
    }
    if (status == 400 || status == 401) {
        attest_print_refusal("attestd", what, status, reply);
        /* attestd says "verdict": "policy" (older replies only word the message so). */
        const char *verdict = attest_jstr(reply, "verdict");
        if (status == 401 && ((verdict && streq(verdict, "policy")) ||
                              (!verdict && error && strncmp(error, "policy rejected", 15) == 0)))
            return NT_EXIT_POLICY;
        return NT_EXIT_INVALID;
    }
    log_error("%s: unexpected HTTP status %ld from attestd%s%s (is --attestd '%s' the service's "
              "base URL?)",
              what, status, error ? ": " : "", error ? error : "", run->args->base);
    return NT_EXIT_IO;
}

/* POST /v1/challenge. */
static int get_challenge(AttestRun *run, char **ret_nonce) {
    json_auto_t *req = json_pack("{ss}", "version", ATTEST_PROTO_VERSION);
    json_auto_t *reply = NULL;
    long status = 0;
    const char *nonce;
    int r;

    if (!req) {
        log_oom();
        return NT_EXIT_IO;
    }
    r = attest_exchange(run, "Challenge", "POST", "/v1/challenge", req, &status, &reply);
    if (r != STEP_OK)
        return r;
    if (status != 200)
        return attest_http_failure(run, "Challenge", status, reply);
    nonce = attest_jstr(reply, "nonce");
    if (!nonce || !nonce[0] || strlen(nonce) > 1024) {
        log_error("Challenge: attestd's answer has no valid \"nonce\".");
        return NT_EXIT_IO;
    }
    *ret_nonce = strdup(nonce);
    if (!*ret_nonce) {
        log_oom();
        return NT_EXIT_IO;
    }
    return STEP_OK;
}

/* Parses a public JWK given as text; refuses private members. NULL on failure (logged). */
static json_t *public_jwk_from_text(const char *text, const char *what) {
    static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    json_auto_t *jwk = json_loads(text, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(jwk) || !attest_jstr(jwk, "kty")) {
        log_error("%s is not a JWK.", what);
        return NULL;
    }
    for (size_t i = 0; i < ELEMENTSOF(private_members); i++)
        if (json_object_get(jwk, private_members[i])) {
            log_error("%s holds private key material; refusing to send it.", what);
            return NULL;
        }
    return TAKE_PTR(jwk);
}

/* A transfer key in vhsmd: its private half stays in the daemon. */
int attest_vhsm(AttestRun *run, VhsmClient **ret) {
    int r;

    if (!run->vhsm) {
        r = vhsm_connect(run->args->vhsm_socket, &run->vhsm);
        if (r < 0) {
            run->vhsm = NULL;
            return r;
        }
    }
    (void)vhsm_set_timeout(run->vhsm,
                           (unsigned)MIN(MAX(attest_remaining_ms(run), (int64_t)1000), 120000));
    *ret = run->vhsm;
    return 0;
}

void attest_vhsm_close(AttestRun *run) {
    if (run->vhsm)
        (void)vhsm_disconnect(run->vhsm);
    run->vhsm = NULL;
}

static int transfer_key_vhsm(AttestRun *run) {
    VhsmClient *c = NULL;
    char *jwk_text = NULL;
    const char *sock = run->args->vhsm_socket;
    int r;

    r = attest_vhsm(run, &c);
    if (r < 0) {
        const char *path = sock ? sock : getenv("VHSM_SOCKET");
        log_error_errno(r,
                        "Failed to connect to vhsmd at '%s': %m. Start vhsmd, name its socket with "
                        "--vhsm-socket, or use --no-vhsm for a diagnostic run.",
                        path && path[0] ? path : VHSM_DEFAULT_SOCKET);
        return NT_EXIT_IO;
    }
    r = vhsm_transfer_key_create(c, 0, &jwk_text);
    if (r < 0) {
        log_error_errno(r, "vhsmd refused to create a transfer key: %s (%m)",
                        vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
        attest_vhsm_close(run);
        return NT_EXIT_IO;
    }
    run->tee_pubkey = public_jwk_from_text(jwk_text, "vhsmd's transfer key");
    free(jwk_text);
    return run->tee_pubkey ? NT_EXIT_OK : NT_EXIT_IO;
}

/* Hands the token to vhsmd as its attestation verdict (ATTESTATION_SET with the token: vhsmd
 * checks it against its own pinned attestd keys and that cnf.jwk is its transfer key), so that
 * keys with the attested policy become usable. Not fatal: the token is obtained either way, and a
 * vhsmd without --attestd-jwks does not take verdicts (said once, at notice level). */
void attest_record_verdict_vhsm(AttestRun *run, const char *token) {
    VhsmClient *c = NULL;
    int r = attest_vhsm(run, &c);
    if (r >= 0)
        r = vhsm_attestation_set_token(c, token);
    if (r == -EOPNOTSUPP)
        log_notice("vhsmd did not record the verdict: %s",
                   vhsm_last_error()[0] ? vhsm_last_error() : "not configured");
    else if (r < 0)
        log_warning_errno(r, "vhsmd did not record the verdict: %s (%m)",
                          vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
    else if (!run->args->quiet)
        log_info("vhsmd recorded the token as its attestation verdict.");
    if (r < 0)
        attest_vhsm_close(run); /* the next use starts afresh */
}

/* --no-vhsm: an ephemeral P-384 key. Only its public half becomes a JWK (the private scalar never
 * enters JSON); the key is freed at once, so nothing can ever be released to it. */
static int transfer_key_ephemeral(AttestRun *run) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL, *pub = NULL;
    _cleanup_free_ unsigned char *spki = NULL;
    const unsigned char *p;
    json_auto_t *jwk = NULL, *thp = NULL;
    int len;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    if (!key) {
        log_error_errno(nt_openssl_error(-EIO, "EVP_PKEY_Q_keygen"),
                        "Failed to generate an ephemeral P-384 key: %m");
        return NT_EXIT_IO;
    }
    len = i2d_PUBKEY(key, &spki);
    if (len <= 0) {
        spki = NULL;
        log_error_errno(nt_openssl_error(-EIO, "i2d_PUBKEY"), "Failed to encode the key: %m");
        return NT_EXIT_IO;
    }
    p = spki;
    pub = d2i_PUBKEY(NULL, &p, len);
    if (!pub) {
        log_error_errno(nt_openssl_error(-EIO, "d2i_PUBKEY"), "Failed to decode the key: %m");
        return NT_EXIT_IO;
    }
    jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, pub);
    if (!jwk || json_object_get(jwk, "d")) {
        log_error("Failed to express the ephemeral key as a public JWK.");
        return NT_EXIT_IO;
    }
    thp = jose_jwk_thp(NULL, jwk, "S256");
    if (!json_is_string(thp) || json_object_set(jwk, "kid", thp) < 0 ||
        json_object_set_new(jwk, "alg", json_string("ECDH-ES")) < 0 ||
        json_object_set_new(jwk, "use", json_string("enc")) < 0) {
        log_oom();
        return NT_EXIT_IO;
    }
    run->tee_pubkey = TAKE_PTR(jwk);
    if (!run->args->quiet)
        log_warning("Warning: --no-vhsm: the tee-pubkey is an ephemeral key made by the agent and "
                    "discarded; the token is for diagnostics only (no key can be released to it).");
    return NT_EXIT_OK;
}

/* runtime_data for this nonce, and the evidence binding it. */
static int make_evidence(AttestRun *run, const char *nonce, json_t **ret_runtime_data,
                         json_t **ret_evidence) {
    json_auto_t *rd = NULL, *evidence = NULL;
    _cleanup_free_ char *canon = NULL, *report_b64 = NULL, *certs_b64 = NULL;
    _cleanup_free_ uint8_t *report = NULL, *certs = NULL;
    size_t canon_len = 0, report_len = 0, certs_len = 0;
    uint8_t report_data[64] = {};
    const char *reason = NULL;
    SnpReport rep;
    int r;

    rd = json_pack("{ss sO}", "nonce", nonce, "tee-pubkey", run->tee_pubkey);
    if (!rd) {
        log_oom();
        return NT_EXIT_IO;
    }
    r = nt_jcs_dump(rd, &canon, &canon_len);
    if (r < 0) {
        log_error_errno(r, "Failed to canonicalise runtime_data (RFC 8785): %m");
        return NT_EXIT_IO;
    }
    /* REPORT_DATA = SHA-384(JCS(runtime_data)) || 16 zero bytes. */
    (void)SHA384((const unsigned char *)canon, canon_len, report_data);

    r = snp_provider_get_ext_report(run->provider, report_data, 0, &report, &report_len, &certs,
                                    &certs_len);
    if (r < 0) {
        log_error_errno(r, "Evidence provider '%s' (%s) failed to produce a report: %m",
                        snp_provider_info(run->provider)->name,
                        snp_provider_info(run->provider)->detail);
        return NT_EXIT_IO;
    }
    r = snp_report_parse(report, report_len, &rep, &reason);
    if (r < 0) {
        log_error_errno(r, "Invalid report from the evidence provider: %s (%m).",
                        reason ? reason : "malformed");
        return NT_EXIT_INVALID;
    }
    if (CRYPTO_memcmp(rep.report_data, report_data, sizeof report_data) != 0) {
        log_error("Invalid report from the evidence provider: REPORT_DATA differs from the "
                  "requested value.");
        return NT_EXIT_INVALID;
    }
    if (base64url_encode_alloc(report, report_len, &report_b64) < 0 ||
        (certs_len > 0 && base64url_encode_alloc(certs, certs_len, &certs_b64) < 0)) {
        log_oom();
        return NT_EXIT_IO;
    }
    evidence = certs_b64 ? json_pack("{ss ss}", "report", report_b64, "cert_table", certs_b64)
                         : json_pack("{ss}", "report", report_b64);
    if (!evidence) {
        log_oom();
        return NT_EXIT_IO;
    }
    *ret_runtime_data = TAKE_PTR(rd);
    *ret_evidence = TAKE_PTR(evidence);
    return NT_EXIT_OK;
}

/* POST /v1/attest. STEP_OK with the token. */
static int post_attest(AttestRun *run, const char *nonce, json_t *runtime_data, json_t *evidence,
                       char **ret_token) {
    json_auto_t *req = NULL, *reply = NULL;
    long status = 0;
    const char *token;
    int r;

    req = json_pack("{ss ss sO sO}", "version", ATTEST_PROTO_VERSION, "nonce", nonce, "evidence",
                    evidence, "runtime_data", runtime_data);
    if (!req || (run->args->policy_id &&
                 json_object_set_new(req, "policy_id", json_string(run->args->policy_id)) < 0)) {
        log_oom();
        return NT_EXIT_IO;
    }
    r = attest_exchange(run, "Attestation", "POST", "/v1/attest", req, &status, &reply);
    if (r != STEP_OK)
        return r;
    if (status != 200)
        return attest_http_failure(run, "Attestation", status, reply);
    token = attest_jstr(reply, "token");
    if (!token || !token[0] || strlen(token) > NT_EAR_MAX_TOKEN_SIZE) {
        log_error("Attestation: attestd's answer has no valid \"token\".");
        return NT_EXIT_IO;
    }
    *ret_token = strdup(token);
    if (!*ret_token) {
        log_oom();
        return NT_EXIT_IO;
    }
    return STEP_OK;
}

/* GET /.well-known/jwks.json. */
static int get_jwks(AttestRun *run, json_t **ret_jwks) {
    json_auto_t *reply = NULL;
    long status = 0;
    int r;

    r = attest_exchange(run, "Signing keys", "GET", "/.well-known/jwks.json", NULL, &status,
                        &reply);
    if (r != STEP_OK)
        return r;
    if (status != 200)
        return attest_http_failure(run, "Signing keys", status, reply);
    if (!json_is_array(json_object_get(reply, "keys"))) {
        log_error("Signing keys: attestd's /.well-known/jwks.json is not a JWK set.");
        return NT_EXIT_IO;
    }
    *ret_jwks = TAKE_PTR(reply);
    return STEP_OK;
}

/* attestd's JWKS, kept by the process between runs: a run reuses the set fetched for the same
 * attestd URL and CA within ATTEST_JWKS_TTL_MS. A token that does not verify against the kept set
 * (an unknown kid: attestd rotated) makes the run fetch the set once more and verify again, so a
 * token costs at most one fetch, as before the cache; a set that fails to verify a token is not
 * used again. At most ATTEST_JWKS_CACHE_SLOTS URLs are kept (the oldest is replaced). */
typedef struct JwksSlot {
    char *base, *ca_file; /* ca_file NULL: the system store */
    json_t *jwks;
    int64_t fetched_ms; /* CLOCK_MONOTONIC */
} JwksSlot;

static struct {
    pthread_mutex_t lock;
    JwksSlot slots[ATTEST_JWKS_CACHE_SLOTS];
    uint64_t fetches; /* sets downloaded (tests, NT_BENCH_STEPS) */
} jwks_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static JwksSlot *jwks_slot_find(const AttestRun *run) {
    for (size_t i = 0; i < ATTEST_JWKS_CACHE_SLOTS; i++) {
        JwksSlot *sl = &jwks_cache.slots[i];
        if (sl->base && streq(sl->base, run->args->base) &&
            streq_ptr(sl->ca_file, run->args->ca_file))
            return sl;
    }
    return NULL;
}

static void jwks_slot_clear(JwksSlot *sl) {
    free(sl->base);
    free(sl->ca_file);
    json_decref(sl->jwks);
    *sl = (JwksSlot){};
}

/* The kept set for this run's attestd (a new reference), or NULL if none is fresh. */
static json_t *jwks_cache_get(const AttestRun *run) {
    json_t *jwks = NULL;
    JwksSlot *sl;

    pthread_mutex_lock(&jwks_cache.lock);
    sl = jwks_slot_find(run);
    if (sl && attest_now_ms() - sl->fetched_ms < ATTEST_JWKS_TTL_MS)
        jwks = json_incref(sl->jwks);
    else if (sl)
        jwks_slot_clear(sl);
    pthread_mutex_unlock(&jwks_cache.lock);
    return jwks;
}

/* Keeps a set just fetched (failures to keep it are not errors). */
static void jwks_cache_put(const AttestRun *run, json_t *jwks) {
    JwksSlot *sl;

    pthread_mutex_lock(&jwks_cache.lock);
    jwks_cache.fetches++;
    sl = jwks_slot_find(run);
    if (!sl) {
        sl = &jwks_cache.slots[0];
        for (size_t i = 0; i < ATTEST_JWKS_CACHE_SLOTS; i++) {
            JwksSlot *c = &jwks_cache.slots[i];
            if (!c->base) {
                sl = c;
                break;
            }
            if (c->fetched_ms < sl->fetched_ms)
                sl = c;
        }
        jwks_slot_clear(sl);
        sl->base = strdup(run->args->base);
        sl->ca_file = run->args->ca_file ? strdup(run->args->ca_file) : NULL;
        if (!sl->base || (run->args->ca_file && !sl->ca_file)) {
            jwks_slot_clear(sl);
            pthread_mutex_unlock(&jwks_cache.lock);
            return;
        }
    }
    json_decref(sl->jwks);
    sl->jwks = json_incref(jwks);
    sl->fetched_ms = attest_now_ms();
    pthread_mutex_unlock(&jwks_cache.lock);
}

/* Drops the kept set for this run's attestd if it is still `jwks`. */
static void jwks_cache_drop(const AttestRun *run, const json_t *jwks) {
    JwksSlot *sl;

    pthread_mutex_lock(&jwks_cache.lock);
    sl = jwks_slot_find(run);
    if (sl && sl->jwks == jwks)
        jwks_slot_clear(sl);
    pthread_mutex_unlock(&jwks_cache.lock);
}

uint64_t attest_jwks_fetches(void) {
    uint64_t n;
    pthread_mutex_lock(&jwks_cache.lock);
    n = jwks_cache.fetches;
    pthread_mutex_unlock(&jwks_cache.lock);
    return n;
}

void attest_jwks_cache_clear(void) {
    pthread_mutex_lock(&jwks_cache.lock);
    for (size_t i = 0; i < ATTEST_JWKS_CACHE_SLOTS; i++)
        jwks_slot_clear(&jwks_cache.slots[i]);
    pthread_mutex_unlock(&jwks_cache.lock);
}

/* get_jwks(), retried like the other steps, and kept. */
static int fetch_jwks(AttestRun *run, json_t **ret_jwks) {
    int r;

    do
        r = get_jwks(run, ret_jwks);
    while (attest_again(run, &r, false));
    if (r != STEP_OK)
        return r < 0 ? NT_EXIT_IO : r;
    jwks_cache_put(run, *ret_jwks);
    return NT_EXIT_OK;
}

json_t *attest_cpu0_of(const json_t *claims) {
    return json_object_get(json_object_get(claims, "submods"), NT_EAR_SUBMOD);
}

json_t *attest_annotated_evidence_of(const json_t *claims) {
    return json_object_get(attest_cpu0_of(claims), "ear.veraison.annotated-evidence");
}

/* Verifies the token against the JWKS and checks that it is about us: our key in cnf.jwk, our
 * nonce in the runtime data claims. */
static int check_token(AttestRun *run, const char *token, const json_t *jwks, bool jwks_cached,
                       const char *nonce, json_t **ret_claims) {
    NtEarVerifyOptions o = NT_EAR_VERIFY_OPTIONS_INIT;
    json_auto_t *claims = NULL, *thp_ours = NULL, *thp_cnf = NULL;
    const json_t *cnf, *rdc;
    char err[256] = "";
    int r;

    r = nt_ear_verify(token, jwks, &o, &claims, err);
    if (r < 0 && jwks_cached) {
        /* Perhaps attestd rotated its keys since the set was kept: fetch it once more. */
        json_auto_t *fresh = NULL;
        jwks_cache_drop(run, jwks);
        log_debug("The token does not verify against the kept JWKS (%s); fetching it again.",
                  err[0] ? err : "no detail");
        r = fetch_jwks(run, &fresh);
        if (r != NT_EXIT_OK)
            return r;
        err[0] = '\0';
        r = nt_ear_verify(token, fresh, &o, &claims, err);
    }
    if (r < 0) {
        log_error_errno(r, "The token from attestd does not verify against its JWKS: %s (%m)",
                        err[0] ? err : "no detail");
        return NT_EXIT_INVALID;
    }
    cnf = json_object_get(json_object_get(claims, "cnf"), "jwk");
    thp_ours = jose_jwk_thp(NULL, run->tee_pubkey, "S256");
    thp_cnf = cnf ? jose_jwk_thp(NULL, cnf, "S256") : NULL;
    if (!json_is_string(thp_ours) || !json_equal(thp_ours, thp_cnf)) {
        log_error("The token from attestd does not confirm our key (cnf.jwk %s).",
                  json_is_string(thp_cnf) ? "is another key" : "is missing");
        return NT_EXIT_INVALID;
    }
    rdc = json_object_get(attest_annotated_evidence_of(claims), "runtime_data_claims");
    if (!attest_jstr(rdc, "nonce") || !streq(attest_jstr(rdc, "nonce"), nonce)) {
        log_error("The token from attestd does not carry our nonce.");
        return NT_EXIT_INVALID;
    }
    if (run->args->policy_id) {
        const char *pid = attest_jstr(attest_cpu0_of(claims), "ear.appraisal-policy-id");
        if (!pid || !streq(pid, run->args->policy_id)) {
            log_error("The token names appraisal policy '%s', not the requested '%s'.",
                      pid ? pid : "(none)", run->args->policy_id);
            return NT_EXIT_INVALID;
        }
    }
    *ret_claims = TAKE_PTR(claims);
    return NT_EXIT_OK;
}

/* Sleeps before the next try. NT_EXIT_OK to go on, or NT_EXIT_IO (logged) when the deadline
 * leaves no time for another one. */
int attest_wait_for_retry(AttestRun *run) {
    unsigned delay = nt_backoff_next(&run->backoff, run->retry_after_s);
    int64_t left = attest_remaining_ms(run);
    struct timespec ts;

    /* A delay past the deadline is cut short for one last try, if that has time to run. */
    if ((int64_t)delay + ATTEST_LAST_TRY_MS > left) {
        if (left < 2 * ATTEST_LAST_TRY_MS) {
            run->gave_up = true;
            log_error("Giving up after %u request%s within the %u s deadline: %s.", run->attempts,
                      run->attempts == 1 ? "" : "s", run->args->timeout_s, run->last_error);
            return NT_EXIT_IO;
        }
        delay = (unsigned)(left - ATTEST_LAST_TRY_MS);
    }
    if (!run->args->quiet)
        log_info("%s; retrying in %u ms (%lld ms left).", run->last_error, delay, (long long)left);
    ts.tv_sec = delay / 1000;
    ts.tv_nsec = (long)(delay % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return NT_EXIT_OK;
}

/* After a step's result *r: true to send the same request again, after a wait. STEP_RETRY_SAME
 * (429: the request was not handled) always repeats it; STEP_RETRY too unless
 * new_challenge_on_retry (an attestation that failed in transit or with a 5xx may have used its
 * nonce up). When the deadline allows no further wait, *r becomes NT_EXIT_IO. */
bool attest_again(AttestRun *run, int *r, bool new_challenge_on_retry) {
    if (*r != STEP_RETRY_SAME && (*r != STEP_RETRY || new_challenge_on_retry))
        return false;
    if (attest_wait_for_retry(run) != NT_EXIT_OK) {
        *r = NT_EXIT_IO;
        return false;
    }
    return true;
}

int attest_obtain_token(AttestRun *run, char **ret_token, json_t **ret_claims) {
    unsigned renewals = 0;
    int r;

    for (;;) {
        _cleanup_free_ char *nonce = NULL, *token = NULL;
        json_auto_t *rd = NULL, *evidence = NULL, *jwks = NULL, *claims = NULL;
        bool jwks_cached;

        do
            r = get_challenge(run, &nonce);
        while (attest_again(run, &r, false));
        if (r != STEP_OK)
            return r == STEP_RENONCE ? NT_EXIT_IO : r; /* no nonce to renew: cannot happen */
        if (!run->tee_pubkey) {
            /* After the first challenge: no transfer key is made while the service is down. */
            r = run->args->no_vhsm ? transfer_key_ephemeral(run) : transfer_key_vhsm(run);
            if (r != NT_EXIT_OK)
                return r;
        }
        r = make_evidence(run, nonce, &rd, &evidence);
        if (r != NT_EXIT_OK)
            return r;

        do
            r = post_attest(run, nonce, rd, evidence, &token);
        while (attest_again(run, &r, true));
        if (r == STEP_RETRY) {
            if ((r = attest_wait_for_retry(run)) != NT_EXIT_OK)
                return r;
            continue;
        }
        if (r == STEP_RENONCE) {
            if (++renewals > ATTEST_MAX_NONCE_RENEWALS) {
                log_error("attestd declared %u nonces in a row expired before they could be used "
                          "(are the clocks of the attestd replicas far apart?).",
                          renewals);
                return NT_EXIT_IO;
            }
            if (!run->args->quiet)
                log_info("%s; requesting a new challenge.", run->last_error);
            continue;
        }
        if (r != STEP_OK)
            return r;

        /* The token is ours now: only the keys to check it are fetched again on failure. */
        jwks = jwks_cache_get(run);
        jwks_cached = jwks != NULL;
        if (!jwks_cached && (r = fetch_jwks(run, &jwks)) != NT_EXIT_OK)
            return r;
        r = check_token(run, token, jwks, jwks_cached, nonce, &claims);
        if (r != NT_EXIT_OK)
            return r;
        *ret_token = TAKE_PTR(token);
        *ret_claims = TAKE_PTR(claims);
        return NT_EXIT_OK;
    }
}

static int attest_open_provider(const AttestArgs *a, SnpProvider **ret) {
    int r = snp_provider_open(a->provider, a->sim_dir, ret);
    if (r == -ENODEV) {
        log_error("%s", snp_provider_missing_message());
        return NT_EXIT_NO_PROVIDER;
    }
    if (r == -ENOENT && a->provider && streq(a->provider, "sim")) {
        log_error_errno(r,
                        "No simulated chip in '%s': %m. Create one with 'nitride sim init DIR "
                        "--product milan|genoa|turin'.",
                        a->sim_dir ? a->sim_dir : "$NITRIDE_SIM_DIR");
        return NT_EXIT_NO_PROVIDER;
    }
    if (r == -ENOENT) {
        log_error_errno(r, "Evidence provider '%s' is not usable on this host: %m. %s",
                        a->provider ? a->provider : "auto", snp_provider_missing_message());
        return NT_EXIT_NO_PROVIDER;
    }
    if (r < 0) {
        log_error_errno(r, "Failed to open evidence provider '%s': %m",
                        a->provider ? a->provider : "auto");
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}
static int attest_parse_option(int c, const char *arg, AttestArgs *a) {
    switch (c) {
    case ATTEST_ARG_ATTESTD:
        a->attestd_url = arg;
        return NT_EXIT_OK;
    case ATTEST_ARG_TOKEN_OUT:
        a->token_out = arg;
        return NT_EXIT_OK;
    case 'q':
        a->quiet = true;
        return NT_EXIT_OK;
    case ATTEST_ARG_VHSM_SOCKET:
        a->vhsm_socket = arg;
        return NT_EXIT_OK;
    case ATTEST_ARG_PROVIDER:
        a->provider = streq(arg, "auto") ? NULL : arg;
        if (a->provider && !streq(a->provider, "sev-guest") && !streq(a->provider, "tsm") &&
            !streq(a->provider, "sim")) {
            log_error("Unknown provider '%s' (expected auto, sev-guest, tsm or sim).", arg);
            return NT_EXIT_USAGE;
        }
        return NT_EXIT_OK;
    case ATTEST_ARG_SIM:
        a->sim_dir = arg;
        return NT_EXIT_OK;
    case ATTEST_ARG_CA:
        a->ca_file = arg;
        return NT_EXIT_OK;
    case ATTEST_ARG_TIMEOUT: {
        char *end = NULL;
        unsigned long v;
        errno = 0;
        v = strtoul(arg, &end, 10);
        if (errno != 0 || !end || *end != '\0' || end == arg || v < 1 || v > ATTEST_MAX_TIMEOUT_S) {
            log_error("Invalid --timeout '%s' (expected 1 to %d seconds).", arg,
                      ATTEST_MAX_TIMEOUT_S);
            return NT_EXIT_USAGE;
        }
        a->timeout_s = (unsigned)v;
        return NT_EXIT_OK;
    }
    default:
        return -1;
    }
}

int attest_getopt(int argc, char **argv, const struct option *options, AttestArgs *a) {
    int c, r;

    while ((c = getopt_long(argc, argv, "qh", options, NULL)) >= 0) {
        r = attest_parse_option(c, optarg, a);
        if (r < 0)
            return c;
        if (r != NT_EXIT_OK)
            return ATTEST_OPT_INVALID;
    }
    return -1;
}

bool attest_text_option_ok(const char *option, const char *arg, size_t max) {
    if (arg[0] && strlen(arg) <= max)
        return true;
    log_error("Invalid %s '%.*s': 1 to %zu characters.", option, (int)max, arg, max);
    return false;
}

int attest_run_start(AttestRun *run, AttestArgs *a) {
    int r;

    if (!a->attestd_url) {
        log_error("--attestd URL is required.");
        return NT_EXIT_USAGE;
    }
    if (a->sim_dir) {
        if (a->provider && !streq(a->provider, "sim")) {
            log_error("--sim only applies to --provider sim.");
            return NT_EXIT_USAGE;
        }
        a->provider = "sim";
    }
    r = attest_check_url(a->attestd_url, "--attestd", &a->base);
    if (r != NT_EXIT_OK)
        return r;
    run->deadline_ms = attest_now_ms() + (int64_t)a->timeout_s * 1000;
    return attest_open_provider(a, &run->provider);
}

void attest_run_done(AttestRun *run, AttestArgs *a) {
    attest_vhsm_close(run);
    json_decref(run->tee_pubkey);
    run->tee_pubkey = NULL;
    (void)snp_provider_free(run->provider);
    run->provider = NULL;
    free(a->base);
    a->base = NULL;
}
