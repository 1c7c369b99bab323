/* SPDX-License-Identifier: Apache-2.0 */
/*
 * EAR tokens. Issue: claims built from an authentic verdict (see ear.h for the trustworthiness
 * mapping), serialised compactly and signed by keys.c. Verify: every input is untrusted; the
 * token is split and decoded strictly (three base64url parts, bounded size, header and payload
 * JSON objects without duplicate members), the algorithm is fixed by the key the kid names (only
 * ES256/ES384), and only then is the signature checked by libjose.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jose/b64.h>
#include <jose/jws.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "config.h"
#include "core/encoding.h"
#include "token/ear.h"
#include "token/jose-util.h"

static const char *const status_names[_NT_EAR_STATUS_MAX] = {
    [NT_EAR_AFFIRMING] = "affirming",
    [NT_EAR_WARNING] = "warning",
    [NT_EAR_CONTRAINDICATED] = "contraindicated",
};

const char *nt_ear_status_to_string(NtEarStatus s) {
    return s >= 0 && s < _NT_EAR_STATUS_MAX ? status_names[s] : NULL;
}

int nt_ear_status_from_string(const char *s) {
    for (int i = 0; s && i < _NT_EAR_STATUS_MAX; i++)
        if (streq(s, status_names[i]))
            return i;
    return -EINVAL;
}

/* AR4SI tiers. */
#define TIER_AFFIRMING 2
#define TIER_WARNING 32
#define TIER_UNRECOGNISED 33
#define TIER_CONTRAINDICATED 96

enum { TV_II, TV_CONFIG, TV_EXEC, TV_FS, TV_HW, TV_RUNTIME, TV_STORAGE, TV_SOURCED, _TV_MAX };
static const char *const tv_names[_TV_MAX] = {
    [TV_II] = "instance-identity",   [TV_CONFIG] = "configuration", [TV_EXEC] = "executables",
    [TV_FS] = "file-system",         [TV_HW] = "hardware",          [TV_RUNTIME] = "runtime-opaque",
    [TV_STORAGE] = "storage-opaque", [TV_SOURCED] = "sourced-data",
};

static bool name_in(const char *n, const char *const *list) {
    for (; *list; list++)
        if (streq(n, *list))
            return true;
    return false;
}

static int claim_of_failed_check(const char *name) {
    static const char *const identity[] = {"vmpl",
                                           "allowed_signing_key",
                                           "chip_id_masked",
                                           "id_key_digest",
                                           "author_key_digest",
                                           "report_data",
                                           NULL};
    static const char *const hardware[] = {"min_tcb", "min_firmware", "allowed_product",
                                           "min_report_version", NULL};
    if (name_in(name, identity))
        return TV_II;
    if (name_in(name, hardware))
        return TV_HW;
    if (streq(name, "measurement"))
        return TV_EXEC;
    return TV_CONFIG;
}

static NtEarStatus status_of_tier(int t) {
    if (t >= TIER_CONTRAINDICATED)
        return NT_EAR_CONTRAINDICATED;
    if (t >= TIER_WARNING)
        return NT_EAR_WARNING;
    return NT_EAR_AFFIRMING;
}

int nt_ear_appraise(const NtEarInput *in, json_t **ret_vector, NtEarStatus *ret_status) {
    int tv[_TV_MAX] = {};
    const NtVerdict *v;
    NtEarStatus st = NT_EAR_AFFIRMING;
    json_t *o;

    if (!in || !(v = in->verdict) || !v->have_report)
        return -EINVAL;
    NtVerdictStatus vs = nt_verdict_status(v);
    if (vs != NT_VERDICT_OK && vs != NT_VERDICT_POLICY)
        return -EINVAL;

    tv[TV_II] = TIER_AFFIRMING;
    tv[TV_HW] = TIER_AFFIRMING;
    tv[TV_RUNTIME] = v->report.policy & SNP_POLICY_DEBUG ? TIER_WARNING : TIER_AFFIRMING;
    if (v->policy_applied) {
        const NtCheck *m = nt_verdict_find(v, "measurement");
        tv[TV_CONFIG] = TIER_AFFIRMING;
        tv[TV_EXEC] = m && m->result == NT_CHECK_PASS ? TIER_AFFIRMING : TIER_UNRECOGNISED;
    }
    if (in->tcb_below_recommended)
        tv[TV_HW] = TIER_WARNING;
    for (size_t i = 0; i < v->n_checks; i++) {
        const NtCheck *c = &v->checks[i];
        if (c->result == NT_CHECK_FAIL && c->cls == NT_CHECK_POLICY)
            tv[claim_of_failed_check(c->name)] = TIER_CONTRAINDICATED;
    }
    /* A POLICY verdict without a recognisable failed check is still a refusal. */
    if (vs == NT_VERDICT_POLICY && tv[TV_CONFIG] < TIER_CONTRAINDICATED &&
        tv[TV_II] < TIER_CONTRAINDICATED && tv[TV_HW] < TIER_CONTRAINDICATED &&
        tv[TV_EXEC] < TIER_CONTRAINDICATED)
        tv[TV_CONFIG] = TIER_CONTRAINDICATED;

    o = json_object();
    if (!o)
        return -ENOMEM;
    for (int i = 0; i < _TV_MAX; i++) {
        if (tv[i] == 0)
            continue;
        if (json_object_set_new(o, tv_names[i], json_integer(tv[i])) < 0) {
            json_decref(o);
            return -ENOMEM;
        }
        if (status_of_tier(tv[i]) > st)
            st = status_of_tier(tv[i]);
    }
    if (ret_vector)
        *ret_vector = o;
    else
        json_decref(o);
    if (ret_status)
        *ret_status = st;
    return 0;
}

static json_t *hex_json(const uint8_t *p, size_t n) {
    char buf[2 * 64 + 1];
    if (n > 64)
        return NULL;
    hex_encode(p, n, buf);
    buf[2 * n] = 0;
    return json_string(buf);
}

static bool all_zero(const uint8_t *p, size_t n) {
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

static int set(json_t *o, const char *k, json_t *v) {
    return v ? json_object_set_new(o, k, v) : -ENOMEM;
}

json_t *nt_ear_annotated_evidence(const NtVerdict *v, const json_t *runtime_data) {
    const SnpReport *r;
    uint8_t chip_hash[SHA256_DIGEST_LENGTH];
    char polhex[24], abi[16];
    SnpTcb tcb;
    int e = 0;

    if (!v || !v->have_report)
        return NULL;
    r = &v->report;
    json_auto_t *o = json_object();
    json_t *pol = json_object(), *t = NULL;
    if (!o || !pol) {
        json_decref(pol);
        return NULL;
    }
    snprintf(polhex, sizeof polhex, "0x%llx", (unsigned long long)r->policy);
    snprintf(abi, sizeof abi, "%u.%u", (unsigned)((r->policy >> SNP_POLICY_ABI_MAJOR_SHIFT) & 0xFF),
             (unsigned)(r->policy & SNP_POLICY_ABI_MINOR_MASK));
    e |= set(pol, "value", json_string(polhex));
    e |= set(pol, "debug", json_boolean(r->policy & SNP_POLICY_DEBUG));
    e |= set(pol, "migrate_ma", json_boolean(r->policy & SNP_POLICY_MIGRATE_MA));
    e |= set(pol, "smt", json_boolean(r->policy & SNP_POLICY_SMT));
    e |= set(pol, "single_socket", json_boolean(r->policy & SNP_POLICY_SINGLE_SOCKET));
    e |= set(pol, "abi", json_string(abi));

    if (v->product >= 0 && v->product < _SNP_PRODUCT_MAX)
        e |= set(o, "product", json_string(snp_product_to_string(v->product)));
    e |= set(o, "signing_key", json_string(v->signing_role == NT_CERT_ROLE_VLEK ? "VLEK" : "VCEK"));
    if (v->signing_role == NT_CERT_ROLE_VLEK && v->csp_id[0])
        e |= set(o, "csp_id", json_string(v->csp_id));
    e |= set(o, "measurement", hex_json(r->measurement, sizeof r->measurement));
    e |= set(o, "host_data", hex_json(r->host_data, sizeof r->host_data));
    e |= set(o, "report_data", hex_json(r->report_data, sizeof r->report_data));
    e |= set(o, "policy", pol);
    e |= set(o, "vmpl", json_integer(r->vmpl));
    e |= set(o, "guest_svn", json_integer(r->guest_svn));
    if (v->product >= 0 && v->product < _SNP_PRODUCT_MAX &&
        snp_tcb_decode(r->reported_tcb, v->product, &tcb) >= 0) {
        t = json_pack("{s:i,s:i,s:i,s:i}", "bootloader", tcb.bootloader, "tee", tcb.tee, "snp",
                      tcb.snp, "microcode", tcb.microcode);
        if (t && v->product == SNP_PRODUCT_TURIN)
            e |= set(t, "fmc", json_integer(tcb.fmc));
        e |= set(o, "reported_tcb", t);
    } else {
        snprintf(polhex, sizeof polhex, "0x%016llx", (unsigned long long)r->reported_tcb);
        e |= set(o, "reported_tcb_raw", json_string(polhex));
    }
    SHA256(r->chip_id, sizeof r->chip_id, chip_hash);
    e |= set(o, "chip_id_sha256", hex_json(chip_hash, sizeof chip_hash));
    e |= set(o, "report_version", json_integer(r->version));
    if (!all_zero(r->id_key_digest, sizeof r->id_key_digest))
        e |= set(o, "id_key_digest", hex_json(r->id_key_digest, sizeof r->id_key_digest));
    if (!all_zero(r->author_key_digest, sizeof r->author_key_digest))
        e |= set(o, "author_key_digest",
                 hex_json(r->author_key_digest, sizeof r->author_key_digest));
    if (runtime_data)
        e |= set(o, "runtime_data_claims", json_deep_copy(runtime_data));
    return e ? NULL : json_incref(o);
}

/* A public JWK: an object with a kty and none of the private members of RFC 7518. */
static bool jwk_is_public(const json_t *jwk) {
    static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k", NULL};
    if (!json_is_object(jwk) || !json_is_string(json_object_get(jwk, "kty")))
        return false;
    for (const char *const *p = priv; *p; p++)
        if (json_object_get(jwk, *p))
            return false;
    return true;
}

int nt_ear_issue(NtSigningKeys *k, const NtEarInput *in, char **ret_token, json_t **ret_claims) {
    json_auto_t *vector = NULL, *claims = NULL, *ae = NULL;
    _cleanup_free_ char *payload = NULL;
    NtEarStatus st;
    uint8_t rnd[16];
    char jti[32], *token = NULL;
    int r;

    if (!k || !in || !ret_token || !in->issuer || !json_is_object(in->runtime_data))
        return -EINVAL;
    const json_t *tee = json_object_get(in->runtime_data, "tee-pubkey");
    if (!jwk_is_public(tee))
        return -EINVAL;
    int64_t lifetime = in->lifetime_s > 0 ? in->lifetime_s : NT_EAR_DEFAULT_LIFETIME_S;
    if (lifetime > INT32_MAX)
        return -EINVAL;
    time_t now = in->now ? in->now : time(NULL);

    r = nt_ear_appraise(in, &vector, &st);
    if (r < 0)
        return r;
    ae = nt_ear_annotated_evidence(in->verdict, in->runtime_data);
    if (!ae)
        return -ENOMEM;
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return -EIO;
    if (jose_b64_enc_buf(rnd, sizeof rnd, jti, sizeof jti - 1) != 22)
        return -EIO;
    jti[22] = 0;

    json_t *submod =
        json_pack("{s:s,s:O,s:O}", "ear.status", nt_ear_status_to_string(st),
                  "ear.trustworthiness-vector", vector, "ear.veraison.annotated-evidence", ae);
    if (!submod)
        return -ENOMEM;
    if (in->policy_id && set(submod, "ear.appraisal-policy-id", json_string(in->policy_id)) < 0) {
        json_decref(submod);
        return -ENOMEM;
    }
    claims = json_pack("{s:s,s:I,s:I,s:s,s:s,s:{s:s,s:s},s:{s:o},s:{s:O}}", "eat_profile",
                       NT_EAR_PROFILE, "iat", (json_int_t)now, "exp", (json_int_t)(now + lifetime),
                       "iss", in->issuer, "jti", jti, "ear.verifier-id", "developer", "nitride",
                       "build", "nitride-attestd " NT_VERSION, "submods", NT_EAR_SUBMOD, submod,
                       "cnf", "jwk", tee);
    if (!claims)
        return -ENOMEM;
    if (in->audience && set(claims, "aud", json_string(in->audience)) < 0)
        return -ENOMEM;
    payload = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
    if (!payload)
        return -ENOMEM;
    r = nt_signing_keys_sign(k, now, payload, strlen(payload), &token, NULL);
    if (r < 0)
        return r;
    *ret_token = token;
    if (ret_claims)
        *ret_claims = TAKE_PTR(claims);
    return 0;
}

int nt_ear_verify(const char *token, const json_t *jwks, const NtEarVerifyOptions *o,
                  json_t **ret_claims, char err[static 256]) {
    NtEarVerifyResult res;
    int r = nt_ear_verify_ex(token, jwks, o, &res, err);
    if (r == 0 && ret_claims)
        *ret_claims = TAKE_PTR(res.claims);
    json_decref(res.claims);
    return r;
}

/* The checks after the signature, on the authentic claims. */
static int check_claims(const json_t *claims, const NtEarVerifyOptions *o, char err[static 256]) {
    const char *iss = NULL, *status = NULL;
    json_int_t iat = 0, exp = 0;
    const json_t *jiat = json_object_get(claims, "iat"), *jexp = json_object_get(claims, "exp");
    const char *prof = json_string_value(json_object_get(claims, "eat_profile"));
    if (!json_is_integer(jiat) || !json_is_integer(jexp))
        return nt_jose_fail(err, -EBADMSG, "iat or exp missing or not an integer");
    iat = json_integer_value(jiat);
    exp = json_integer_value(jexp);
    if (!prof || !streq(prof, NT_EAR_PROFILE))
        return nt_jose_fail(err, -EACCES, "eat_profile is not %s", NT_EAR_PROFILE);
    if (json_unpack((json_t *)claims, "{s:{s:{s:s}}}", "submods", NT_EAR_SUBMOD, "ear.status",
                    &status) < 0)
        return nt_jose_fail(err, -EBADMSG, "no submods.%s.ear.status", NT_EAR_SUBMOD);
    int st = nt_ear_status_from_string(status);
    if (st < 0)
        return nt_jose_fail(err, -EBADMSG, "unknown ear.status '%.32s'", status);

    time_t now = o->now ? o->now : time(NULL);
    int64_t skew = o->skew_s == 0 ? NT_EAR_DEFAULT_SKEW_S : MAX(o->skew_s, (int64_t)0);
    if (exp > INT64_MAX - skew || iat < INT64_MIN + skew)
        return nt_jose_fail(err, -EBADMSG, "iat or exp out of range");
    if ((int64_t)now >= exp + skew)
        return nt_jose_fail(err, -EKEYEXPIRED, "token expired at %lld (now %lld)", (long long)exp,
                            (long long)now);
    if (iat - skew > (int64_t)now)
        return nt_jose_fail(err, -EBADMSG, "token issued in the future (iat %lld, now %lld)",
                            (long long)iat, (long long)now);
    if (o->issuer) {
        iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || !streq(iss, o->issuer))
            return nt_jose_fail(err, -EACCES, "issuer '%.64s' is not '%.64s'", iss ? iss : "(none)",
                                o->issuer);
    }
    if (o->audience) {
        const json_t *aud = json_object_get(claims, "aud"), *a;
        bool ok = json_is_string(aud) && streq(json_string_value(aud), o->audience);
        size_t i;
        json_array_foreach(aud, i, a) if (json_is_string(a) &&
                                          streq(json_string_value(a), o->audience)) ok = true;
        if (!ok)
            return nt_jose_fail(err, -EACCES, "audience '%.64s' not in the token", o->audience);
    }
    if (o->min_status >= 0 && st > o->min_status)
        return nt_jose_fail(err, -EACCES, "status %s below the required %s", status,
                            nt_ear_status_to_string((NtEarStatus)o->min_status));
    return 0;
}

int nt_ear_verify_ex(const char *token, const json_t *jwks, const NtEarVerifyOptions *o,
                     NtEarVerifyResult *ret, char err[static 256]) {
    NtEarVerifyOptions def = NT_EAR_VERIFY_OPTIONS_INIT;
    json_auto_t *hdr = NULL;
    const char *alg = NULL, *kid = NULL, *typ = NULL;
    const json_t *key;
    size_t len;

    err[0] = 0;
    if (!ret)
        return -EINVAL;
    *ret = (NtEarVerifyResult){0};
    if (!token || !json_is_object(jwks))
        return nt_jose_fail(err, -EINVAL, "no token or no JWKS");
    if (!o)
        o = &def;
    len = strnlen(token, NT_EAR_MAX_TOKEN_SIZE + 1);
    if (len > NT_EAR_MAX_TOKEN_SIZE)
        return nt_jose_fail(err, -EBADMSG, "token larger than %d bytes", NT_EAR_MAX_TOKEN_SIZE);
    NtJoseJwsParts parts;
    int r = nt_jose_split_jws(token, len, &parts);
    if (r == -EBADMSG)
        return nt_jose_fail(err, -EBADMSG, "not a JWS compact serialisation (three parts)");
    if (r < 0)
        return nt_jose_fail(err, -EBADMSG, "empty part or character outside base64url");

    hdr = nt_jose_decode_object(parts.header, parts.header_len, NT_EAR_MAX_TOKEN_SIZE);
    if (!hdr)
        return nt_jose_fail(err, -EBADMSG, "protected header is not a base64url JSON object");
    if (json_unpack(hdr, "{s:s,s?s,s?s}", "alg", &alg, "kid", &kid, "typ", &typ) < 0)
        return nt_jose_fail(err, -EBADMSG, "protected header without a string alg");
    if (!streq(alg, "ES256") && !streq(alg, "ES384"))
        return nt_jose_fail(err, -EKEYREJECTED, "algorithm '%.32s' refused (ES256 or ES384 only)",
                            alg);
    if (!kid)
        return nt_jose_fail(err, -EKEYREJECTED, "protected header without kid");
    if (typ && !streq(typ, "JWT"))
        return nt_jose_fail(err, -EBADMSG, "typ '%.32s' is not JWT", typ);
    if (json_object_get(hdr, "crit"))
        return nt_jose_fail(err, -EBADMSG, "critical header parameters not supported");
    key = nt_jose_find_kid(jwks, kid);
    if (!key) {
        ret->unknown_kid = true;
        return nt_jose_fail(err, -EKEYREJECTED, "unknown kid '%.64s'", kid);
    }
    if (!nt_jose_key_fits_alg(key, alg))
        return nt_jose_fail(err, -EKEYREJECTED, "algorithm %s does not match key '%.64s'", alg,
                            kid);
    if (json_object_get(key, "d"))
        return nt_jose_fail(err, -EKEYREJECTED, "JWKS holds a private key");
    r = nt_jose_jws_verify(&parts, key);
    if (r == -ENOMEM)
        return nt_jose_fail(err, -ENOMEM, "out of memory");
    if (r < 0)
        return nt_jose_fail(err, -EKEYREJECTED, "signature does not verify with key '%.64s'", kid);

    /* Authentic from here: the claims are handed out also when a later check fails. */
    ret->claims = nt_jose_decode_object(parts.payload, parts.payload_len, NT_EAR_MAX_TOKEN_SIZE);
    if (!ret->claims)
        return nt_jose_fail(err, -EBADMSG, "payload is not a JSON object");
    return check_claims(ret->claims, o, err);
}
