/* SPDX-License-Identifier: Apache-2.0 */
/*
 * EAR tokens from verdicts of simulated chips (Milan, Genoa, Turin; VCEK and VLEK): issue and
 * verify round trips with the claims checked; the trustworthiness vector and status for policy
 * failures, an unmeasured policy and a TCB below the recommended; hostile tokens (tampered
 * header, payload or signature, unknown kid, alg none, HS256 keyed with the public key, alg and
 * key mismatch, oversize), time checks (exp, iat in the future, skew), iss/aud/min_status; a
 * tee-pubkey with private members refused; the Turin VLEK token stays under 4 KiB.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jose/b64.h>
#include <openssl/hmac.h>

#include "core/encoding.h"
#include "token/ear.h"
#include "tt-util.h"

static TtChip chips[] = {
    {"milan", SNP_PRODUCT_MILAN, false, ""},     {"milan-vlek", SNP_PRODUCT_MILAN, true, ""},
    {"genoa", SNP_PRODUCT_GENOA, false, ""},     {"turin", SNP_PRODUCT_TURIN, false, ""},
    {"turin-vlek", SNP_PRODUCT_TURIN, true, ""},
};
enum { MILAN, MILAN_VLEK, GENOA, TURIN, TURIN_VLEK };
static char tmpdir[] = "/tmp/nt-test-ear-XXXXXX";
static NtSigningKeys *keys;
static json_t *jwks;

static int setup(void **state) {
    char kd[PATH_MAX];
    if (!mkdtemp(tmpdir))
        return -1;
    for (size_t i = 0; i < ELEMENTSOF(chips); i++)
        if (tt_chip_init(&chips[i], tmpdir) < 0)
            return -1;
    snprintf(kd, sizeof kd, "%s/keys", tmpdir);
    if (nt_signing_keys_open_dir(kd, NT_JWS_ES384, &keys, NULL) < 0)
        return -1;
    jwks = nt_signing_keys_jwks(keys, 0);
    return jwks ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[PATH_MAX + 16];
    json_decref(jwks);
    nt_signing_keys_free(keys);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static NtVerdict *verdict(int chip, const json_t *rd, const char *policy) {
    NtVerdict *v = NULL;
    assert_int_equal(tt_verdict(&chips[chip], rd, policy, true, &v), 0);
    return v;
}

static NtEarInput input(const NtVerdict *v, const json_t *rd) {
    return (NtEarInput){.verdict = v,
                        .runtime_data = rd,
                        .policy_id = "default",
                        .issuer = "https://attestd.test",
                        .audience = "kmsd"};
}

static NtEarVerifyOptions vopts(void) {
    NtEarVerifyOptions o = NT_EAR_VERIFY_OPTIONS_INIT;
    o.issuer = "https://attestd.test";
    o.audience = "kmsd";
    o.min_status = NT_EAR_AFFIRMING;
    return o;
}

static int verify(const char *token, const NtEarVerifyOptions *o, char err[static 256]) {
    return nt_ear_verify(token, jwks, o, NULL, err);
}

/* Member at a '/'-separated path (names contain no '/'). */
static json_t *jget(const json_t *o, const char *path) {
    json_t *v = (json_t *)o;
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", path);
    for (char *t = strtok_r(buf, "/", &save); t && v; t = strtok_r(NULL, "/", &save))
        v = json_object_get(v, t);
    return v;
}
#define jstr(o, p) json_string_value(jget((o), (p)))
#define jint(o, p) json_integer_value(jget((o), (p)))
#define AE "submods/cpu0/ear.veraison.annotated-evidence/"
#define TV "submods/cpu0/ear.trustworthiness-vector/"

static char *issue(const NtEarInput *in, json_t **ret_claims) {
    char *token = NULL;
    assert_int_equal(nt_ear_issue(keys, in, &token, ret_claims), 0);
    return token;
}

static void test_roundtrip(void **state) {
    for (size_t i = 0; i < ELEMENTSOF(chips); i++) {
        json_auto_t *rd = tt_runtime_data("n0nce", "P-384");
        _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(i, rd, NULL);
        NtEarInput in = input(v, rd);
        NtEarVerifyOptions o = vopts();
        _cleanup_free_ char *token = NULL, *canon = NULL;
        json_auto_t *claims = NULL, *vclaims = NULL;
        char err[256], hex[129];
        uint8_t digest[64] = {};
        size_t len;

        assert_int_equal(nt_verdict_status(v), NT_VERDICT_OK);
        token = issue(&in, &claims);
        if (nt_ear_verify(token, jwks, &o, &vclaims, err) != 0)
            fail_msg("%s: %s", chips[i].name, err);
        assert_true(json_equal(claims, vclaims));
        assert_string_equal(jstr(vclaims, "eat_profile"), NT_EAR_PROFILE);
        assert_string_equal(jstr(vclaims, "iss"), "https://attestd.test");
        assert_string_equal(jstr(vclaims, "aud"), "kmsd");
        assert_int_equal(strlen(jstr(vclaims, "jti")), 22);
        assert_int_equal(jint(vclaims, "exp") - jint(vclaims, "iat"), NT_EAR_DEFAULT_LIFETIME_S);
        assert_string_equal(jstr(vclaims, "ear.verifier-id/developer"), "nitride");
        assert_non_null(strstr(jstr(vclaims, "ear.verifier-id/build"), "nitride-attestd "));
        assert_string_equal(jstr(vclaims, "submods/cpu0/ear.status"), "affirming");
        assert_string_equal(jstr(vclaims, "submods/cpu0/ear.appraisal-policy-id"), "default");
        assert_int_equal(jint(vclaims, TV "instance-identity"), 2);
        assert_int_equal(jint(vclaims, TV "hardware"), 2);
        assert_int_equal(jint(vclaims, TV "runtime-opaque"), 2);
        assert_null(jget(vclaims, TV "executables")); /* no policy: no claim */
        assert_string_equal(jstr(vclaims, AE "product"), snp_product_to_string(chips[i].product));
        assert_string_equal(jstr(vclaims, AE "signing_key"), chips[i].vlek ? "VLEK" : "VCEK");
        assert_true(chips[i].vlek == (jget(vclaims, AE "csp_id") != NULL));
        assert_int_equal(jint(vclaims, AE "vmpl"), v->report.vmpl);
        assert_int_equal(jint(vclaims, AE "report_version"), v->report.version);
        assert_true(json_is_integer(jget(vclaims, AE "reported_tcb/snp")));
        assert_true((chips[i].product == SNP_PRODUCT_TURIN) ==
                    (jget(vclaims, AE "reported_tcb/fmc") != NULL));
        assert_int_equal(strlen(jstr(vclaims, AE "chip_id_sha256")), 64);
        assert_true(json_is_boolean(jget(vclaims, AE "policy/debug")));
        assert_null(jget(vclaims, AE "chip_id"));
        assert_null(jget(vclaims, AE "report"));
        /* The binding: report_data is SHA-384 of the canonical runtime data. */
        assert_int_equal(nt_jcs_dump(rd, &canon, &len), 0);
        SHA384((const uint8_t *)canon, len, digest);
        hex_encode(digest, sizeof digest, hex);
        hex[128] = 0;
        assert_string_equal(jstr(vclaims, AE "report_data"), hex);
        assert_true(json_equal(jget(vclaims, AE "runtime_data_claims"), rd));
        assert_true(json_equal(jget(vclaims, "cnf/jwk"), json_object_get(rd, "tee-pubkey")));
    }
}

/* The issue's size budget: a Turin VLEK verdict with a P-384 tee-pubkey stays under 4 KiB. */
static void test_size(void **state) {
    json_auto_t *rd = tt_runtime_data("a-nonce-of-43-characters-like-base64url-32b", "P-384");
    _cleanup_free_ char *m = tt_measurement_hex(&chips[TURIN_VLEK]), *policy = NULL;
    assert_true(asprintf(&policy, "{\"measurements\":[\"%s\"],\"vmpls\":[0,1,2,3]}", m) > 0);
    _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(TURIN_VLEK, rd, policy);
    NtEarInput in = input(v, rd);
    _cleanup_free_ char *token = issue(&in, NULL);
    printf("Turin VLEK token: %zu bytes\n", strlen(token));
    assert_true(strlen(token) < 4096);
}

static NtEarStatus appraise(const NtVerdict *v, bool below, json_t **ret_vector) {
    json_auto_t *rd = tt_runtime_data("n", "P-256");
    NtEarInput in = input(v, rd);
    NtEarStatus st;
    in.tcb_below_recommended = below;
    assert_int_equal(nt_ear_appraise(&in, ret_vector, &st), 0);
    return st;
}

static void test_vector(void **state) {
    json_auto_t *rd = tt_runtime_data("n", "P-256");
    _cleanup_free_ char *m = tt_measurement_hex(&chips[GENOA]), *good = NULL, *bad = NULL;
    assert_true(asprintf(&good, "{\"measurements\":[\"%s\"]}", m) > 0);
    assert_true(asprintf(&bad, "{\"measurements\":[\"%096d\"],\"vmpls\":[3]}", 7) > 0);
    NtEarVerifyOptions o = vopts();
    char err[256];

    /* Policy with the right measurement: affirming, executables and configuration 2. */
    {
        _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(GENOA, rd, good);
        json_auto_t *tv = NULL;
        assert_int_equal(appraise(v, false, &tv), NT_EAR_AFFIRMING);
        assert_int_equal(json_integer_value(json_object_get(tv, "executables")), 2);
        assert_int_equal(json_integer_value(json_object_get(tv, "configuration")), 2);
        json_decref(tv);
        tv = NULL;
        /* TCB below the recommended: hardware 32, warning; a token is still issued. */
        assert_int_equal(appraise(v, true, &tv), NT_EAR_WARNING);
        assert_int_equal(json_integer_value(json_object_get(tv, "hardware")), 32);
        NtEarInput in = input(v, rd);
        in.tcb_below_recommended = true;
        _cleanup_free_ char *token = issue(&in, NULL);
        assert_int_equal(verify(token, &o, err), -EACCES);
        assert_non_null(strstr(err, "warning"));
        o.min_status = NT_EAR_WARNING;
        assert_int_equal(verify(token, &o, err), 0);
        o.min_status = NT_EAR_AFFIRMING;
    }
    /* Wrong measurement and VMPL: executables and instance-identity 96, contraindicated. */
    {
        _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(GENOA, rd, bad);
        json_auto_t *tv = NULL;
        assert_int_equal(nt_verdict_status(v), NT_VERDICT_POLICY);
        assert_int_equal(appraise(v, false, &tv), NT_EAR_CONTRAINDICATED);
        assert_int_equal(json_integer_value(json_object_get(tv, "executables")), 96);
        assert_int_equal(json_integer_value(json_object_get(tv, "instance-identity")), 96);
        assert_int_equal(json_integer_value(json_object_get(tv, "configuration")), 2);
        NtEarInput in = input(v, rd);
        _cleanup_free_ char *token = issue(&in, NULL);
        assert_int_equal(verify(token, &o, err), -EACCES);
        o.min_status = NT_EAR_WARNING;
        assert_int_equal(verify(token, &o, err), -EACCES);
        o.min_status = -1;
        assert_int_equal(verify(token, &o, err), 0);
        o.min_status = NT_EAR_AFFIRMING;
    }
    /* A policy without a measurement check: unrecognised executables (33), warning. */
    {
        _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(GENOA, rd, "{\"vmpls\":[0,1,2,3]}");
        json_auto_t *tv = NULL;
        assert_int_equal(appraise(v, false, &tv), NT_EAR_WARNING);
        assert_int_equal(json_integer_value(json_object_get(tv, "executables")), 33);
    }
    /* A min_tcb failure is a hardware claim. */
    {
        _cleanup_(nt_verdict_freep) NtVerdict *v =
            verdict(GENOA, rd, "{\"min_tcb\":{\"snp\":255}}");
        json_auto_t *tv = NULL;
        assert_int_equal(appraise(v, false, &tv), NT_EAR_CONTRAINDICATED);
        assert_int_equal(json_integer_value(json_object_get(tv, "hardware")), 96);
    }
    /* An INVALID verdict (ARK not trusted) yields no token. */
    {
        _cleanup_(nt_verdict_freep) NtVerdict *v = NULL;
        _cleanup_free_ char *token = NULL;
        assert_int_equal(tt_verdict(&chips[GENOA], rd, NULL, false, &v), 0);
        assert_int_equal(nt_verdict_status(v), NT_VERDICT_INVALID);
        NtEarInput in = input(v, rd);
        assert_int_equal(nt_ear_issue(keys, &in, &token, NULL), -EINVAL);
        assert_null(token);
    }
}

static void test_tee_pubkey(void **state) {
    json_auto_t *rd = tt_runtime_data("n", "P-384");
    _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(MILAN, rd, NULL);
    NtEarInput in = input(v, rd);
    char *token = NULL;
    json_t *jwk = json_object_get(rd, "tee-pubkey");
    static const char *const priv[] = {"d", "p", "k", "oth"};

    for (size_t i = 0; i < ELEMENTSOF(priv); i++) {
        assert_int_equal(json_object_set_new(jwk, priv[i], json_string("AAAA")), 0);
        assert_int_equal(nt_ear_issue(keys, &in, &token, NULL), -EINVAL);
        assert_null(token);
        assert_int_equal(json_object_del(jwk, priv[i]), 0);
    }
    assert_int_equal(json_object_del(jwk, "kty"), 0);
    assert_int_equal(nt_ear_issue(keys, &in, &token, NULL), -EINVAL);
    assert_int_equal(json_object_del(rd, "tee-pubkey"), 0);
    assert_int_equal(nt_ear_issue(keys, &in, &token, NULL), -EINVAL);
    assert_null(token);
}

static char *b64(const char *s) {
    json_auto_t *j = jose_b64_enc(s, strlen(s));
    assert_non_null(j);
    return strdup(json_string_value(j));
}

static char *b64_dec(const char *s, size_t n) {
    char *out = calloc(1, NT_EAR_MAX_TOKEN_SIZE);
    assert_int_not_equal(jose_b64_dec_buf(s, n, out, NT_EAR_MAX_TOKEN_SIZE - 1), SIZE_MAX);
    return out;
}

/* Splits a compact JWS into its three parts (malloc'd). */
static void split(const char *t, char **h, char **p, char **s) {
    size_t a = strcspn(t, "."), b = a + 1 + strcspn(t + a + 1, ".");
    *h = strndup(t, a);
    *p = strndup(t + a + 1, b - a - 1);
    *s = strdup(t + b + 1);
}

static char *join(const char *h, const char *p, const char *s) {
    char *t = NULL;
    assert_true(asprintf(&t, "%s.%s.%s", h, p, s) > 0);
    return t;
}

static char *replace(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    char *out = NULL;
    assert_non_null(at);
    assert_true(asprintf(&out, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from)) > 0);
    return out;
}

static void expect_verify(const char *token, const NtEarVerifyOptions *o, int want,
                          const char *msg) {
    char err[256];
    int r = verify(token, o, err);
    if (r != want || (msg && !strstr(err, msg)))
        fail_msg("wanted %d '%s', got %d '%s'", want, msg ? msg : "", r, err);
}

static void test_hostile(void **state) {
    json_auto_t *rd = tt_runtime_data("n", "P-384");
    _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(TURIN, rd, NULL);
    NtEarInput in = input(v, rd);
    NtEarVerifyOptions o = vopts();
    _cleanup_free_ char *token = issue(&in, NULL), *h = NULL, *p = NULL, *s = NULL;
    split(token, &h, &p, &s);
    _cleanup_free_ char *hdr = b64_dec(h, strlen(h)), *pay = b64_dec(p, strlen(p));
    _cleanup_free_ char *kid = nt_signing_keys_current_kid(keys, 0);
    expect_verify(token, &o, 0, NULL);

    /* Payload changed (another issuer, same length), signature kept. */
    {
        _cleanup_free_ char *p2 = replace(pay, "attestd.test", "attestd.evil");
        _cleanup_free_ char *e = b64(p2), *t = join(h, e, s);
        expect_verify(t, &o, -EKEYREJECTED, "signature");
    }
    /* Header changed (typ dropped), signature kept. */
    {
        _cleanup_free_ char *h2 = replace(hdr, ",\"typ\":\"JWT\"", "");
        _cleanup_free_ char *e = b64(h2), *t = join(e, p, s);
        expect_verify(t, &o, -EKEYREJECTED, "signature");
    }
    /* Signature bit flipped; signature truncated. */
    {
        _cleanup_free_ char *s2 = strdup(s), *t = NULL, *t2 = NULL;
        s2[10] = s2[10] == 'A' ? 'B' : 'A';
        t = join(h, p, s2);
        expect_verify(t, &o, -EKEYREJECTED, "signature");
        s2[strlen(s2) - 4] = 0;
        t2 = join(h, p, s2);
        expect_verify(t2, &o, -EKEYREJECTED, "signature");
    }
    /* Unknown kid; a JWKS of other keys. */
    {
        _cleanup_free_ char *h2 = replace(hdr, kid, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        _cleanup_free_ char *e = b64(h2), *t = join(e, p, s);
        expect_verify(t, &o, -EKEYREJECTED, "unknown kid");
        json_auto_t *other = json_pack("{s:[]}", "keys");
        char err[256];
        assert_int_equal(nt_ear_verify(token, other, &o, NULL, err), -EKEYREJECTED);
    }
    /* alg none, with and without a signature part. */
    {
        _cleanup_free_ char *h2 = replace(hdr, "ES384", "none");
        _cleanup_free_ char *e = b64(h2), *t = join(e, p, s), *t2 = NULL;
        expect_verify(t, &o, -EKEYREJECTED, "'none' refused");
        assert_true(asprintf(&t2, "%s.%s.", e, p) > 0);
        expect_verify(t2, &o, -EBADMSG, NULL);
    }
    /* HS256 keyed with the public key (the JWKS JSON and the x coordinate): refused. */
    {
        _cleanup_free_ char *h2 = replace(hdr, "ES384", "HS256");
        _cleanup_free_ char *e = b64(h2), *input = NULL;
        _cleanup_free_ char *pub =
            json_dumps(json_array_get(json_object_get(jwks, "keys"), 0), JSON_COMPACT);
        const char *secrets[] = {pub, jstr(json_array_get(json_object_get(jwks, "keys"), 0), "x")};
        assert_true(asprintf(&input, "%s.%s", e, p) > 0);
        for (size_t i = 0; i < ELEMENTSOF(secrets); i++) {
            uint8_t mac[32];
            unsigned mlen = 0;
            assert_non_null(HMAC(EVP_sha256(), secrets[i], strlen(secrets[i]),
                                 (const uint8_t *)input, strlen(input), mac, &mlen));
            json_auto_t *ms = jose_b64_enc(mac, mlen);
            _cleanup_free_ char *t = join(e, p, json_string_value(ms));
            expect_verify(t, &o, -EKEYREJECTED, "'HS256' refused");
        }
    }
    /* ES256 claimed for a P-384 key; a JWKS key restricted to another alg. */
    {
        _cleanup_free_ char *h2 = replace(hdr, "ES384", "ES256");
        _cleanup_free_ char *e = b64(h2), *t = join(e, p, s);
        expect_verify(t, &o, -EKEYREJECTED, "does not match");
        json_auto_t *j2 = json_deep_copy(jwks);
        json_object_set_new(json_array_get(json_object_get(j2, "keys"), 0), "alg",
                            json_string("ES256"));
        char err[256];
        assert_int_equal(nt_ear_verify(token, j2, &o, NULL, err), -EKEYREJECTED);
    }
    /* Malformed: parts, characters, size. */
    {
        _cleanup_free_ char *t = join(h, p, s), *big = malloc(NT_EAR_MAX_TOKEN_SIZE + 2);
        expect_verify("", &o, -EBADMSG, NULL);
        expect_verify("a.b", &o, -EBADMSG, NULL);
        expect_verify("a.b.c.d", &o, -EBADMSG, NULL);
        t[3] = '+';
        expect_verify(t, &o, -EBADMSG, NULL);
        _cleanup_free_ char *nh = b64("[1]"), *t2 = join(nh, p, s);
        expect_verify(t2, &o, -EBADMSG, NULL);
        memset(big, 'A', NT_EAR_MAX_TOKEN_SIZE + 1);
        big[NT_EAR_MAX_TOKEN_SIZE + 1] = 0;
        big[10] = big[20] = '.';
        expect_verify(big, &o, -EBADMSG, "larger than");
    }
}

static void test_time_and_claims(void **state) {
    json_auto_t *rd = tt_runtime_data("n", "P-384");
    _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(MILAN_VLEK, rd, NULL);
    NtEarInput in = input(v, rd);
    time_t t0 = 1900000000;
    in.now = t0;
    in.lifetime_s = 120;
    _cleanup_free_ char *token = issue(&in, NULL);
    NtEarVerifyOptions o = vopts();

    o.now = t0 + 120 + 59; /* within the default skew */
    expect_verify(token, &o, 0, NULL);
    o.now = t0 + 120 + 60;
    expect_verify(token, &o, -EKEYEXPIRED, "expired");
    o.skew_s = -1; /* no skew */
    o.now = t0 + 120;
    expect_verify(token, &o, -EKEYEXPIRED, "expired");
    o.now = t0 + 119;
    expect_verify(token, &o, 0, NULL);
    o.skew_s = 0;
    o.now = t0 - 60;
    expect_verify(token, &o, 0, NULL);
    o.now = t0 - 61;
    expect_verify(token, &o, -EBADMSG, "future");
    o.now = t0;
    o.issuer = "https://other";
    expect_verify(token, &o, -EACCES, "issuer");
    o.issuer = NULL;
    o.audience = "vhsmd";
    expect_verify(token, &o, -EACCES, "audience");
    o.audience = NULL;
    expect_verify(token, &o, 0, NULL);
    /* No aud in the token: an audience requirement fails. */
    in.audience = NULL;
    _cleanup_free_ char *t2 = issue(&in, NULL);
    o.audience = "kmsd";
    expect_verify(t2, &o, -EACCES, "audience");
}

/* nt_ear_verify_ex, which kmsd uses so that it decodes a token once: the same verdicts as
 * nt_ear_verify; the claims of an authentic token that fails a later check (expired, issuer)
 * are handed out, those of a token whose signature does not verify (bad signature, tampered
 * payload, unknown kid, refused alg) never are; an unknown kid is flagged. */
static void test_verify_ex(void **state) {
    json_auto_t *rd = tt_runtime_data("n", "P-384");
    _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(MILAN_VLEK, rd, NULL);
    NtEarInput in = input(v, rd);
    time_t t0 = 1900000000;
    json_auto_t *claims = NULL, *other = json_pack("{s[{ssssss}]}", "keys", "kty", "EC", "crv",
                                                   "P-384", "kid", "nobody");
    _cleanup_free_ char *token = NULL, *h = NULL, *p = NULL, *sg = NULL, *bad = NULL,
                        *forged = NULL, *pl = NULL, *pl2 = NULL, *p2 = NULL, *none = NULL,
                        *nh = NULL, *tn = NULL;
    NtEarVerifyOptions o = vopts();
    NtEarVerifyResult res;
    char err[256];

    in.now = t0;
    in.lifetime_s = 120;
    token = issue(&in, &claims);
    o.now = t0;
    assert_int_equal(nt_ear_verify_ex(token, jwks, &o, &res, err), 0);
    assert_non_null(res.claims);
    assert_false(res.unknown_kid);
    assert_true(json_equal(res.claims, claims));
    json_decref(res.claims);

    /* Expired, and another issuer: refused as before; the authentic claims come back. */
    o.now = t0 + 3600;
    assert_int_equal(nt_ear_verify_ex(token, jwks, &o, &res, err), -EKEYEXPIRED);
    assert_non_null(strstr(err, "expired"));
    assert_non_null(res.claims);
    assert_true(json_equal(res.claims, claims));
    json_decref(res.claims);
    o.now = t0;
    o.issuer = "https://other";
    assert_int_equal(nt_ear_verify_ex(token, jwks, &o, &res, err), -EACCES);
    assert_non_null(res.claims);
    json_decref(res.claims);
    o.issuer = NULL;

    /* A bad signature: refused, no claims. */
    split(token, &h, &p, &sg);
    none = strdup(sg);
    none[10] = none[10] == 'A' ? 'B' : 'A';
    bad = join(h, p, none);
    assert_int_equal(nt_ear_verify_ex(bad, jwks, &o, &res, err), -EKEYREJECTED);
    assert_non_null(strstr(err, "signature"));
    assert_null(res.claims);
    assert_false(res.unknown_kid);
    /* A payload edited to live longer, with the original signature: refused, no claims. */
    pl = b64_dec(p, strlen(p));
    pl2 = replace(pl, "\"exp\":", "\"exp\":9");
    p2 = b64(pl2);
    forged = join(h, p2, sg);
    o.now = t0 + 3600;
    assert_int_equal(nt_ear_verify_ex(forged, jwks, &o, &res, err), -EKEYREJECTED);
    assert_null(res.claims);
    o.now = t0;
    /* An unknown kid is flagged; alg none is refused without claims. */
    assert_int_equal(nt_ear_verify_ex(token, other, &o, &res, err), -EKEYREJECTED);
    assert_true(res.unknown_kid);
    assert_null(res.claims);
    nh = b64("{\"alg\":\"none\",\"kid\":\"x\"}");
    tn = join(nh, p, sg);
    assert_int_equal(nt_ear_verify_ex(tn, jwks, &o, &res, err), -EKEYREJECTED);
    assert_null(res.claims);
    assert_false(res.unknown_kid);
    assert_int_equal(nt_ear_verify_ex(token, jwks, &o, NULL, err), -EINVAL);
}

/* ES256 keys: issued and verified; an ES256 token is refused by a P-384 JWKS holding its kid. */
static void test_es256(void **state) {
    json_auto_t *rd = tt_runtime_data("n", "P-256");
    _cleanup_(nt_verdict_freep) NtVerdict *v = verdict(GENOA, rd, NULL);
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k256 = NULL;
    char kd[PATH_MAX], err[256];
    snprintf(kd, sizeof kd, "%s/keys256", tmpdir);
    assert_int_equal(nt_signing_keys_open_dir(kd, NT_JWS_ES256, &k256, NULL), 0);
    json_auto_t *j256 = nt_signing_keys_jwks(k256, 0);
    NtEarInput in = input(v, rd);
    NtEarVerifyOptions o = vopts();
    _cleanup_free_ char *token = NULL;
    assert_int_equal(nt_ear_issue(k256, &in, &token, NULL), 0);
    assert_int_equal(nt_ear_verify(token, j256, &o, NULL, err), 0);
    assert_int_equal(nt_ear_verify(token, jwks, &o, NULL, err), -EKEYREJECTED);
    /* The P-256 key under the P-384 key's name. */
    json_auto_t *mixed = json_deep_copy(j256);
    json_t *key = json_array_get(json_object_get(mixed, "keys"), 0);
    json_t *k384 = json_array_get(json_object_get(jwks, "keys"), 0);
    json_object_set(key, "crv", json_object_get(k384, "crv"));
    assert_int_equal(nt_ear_verify(token, mixed, &o, NULL, err), -EKEYREJECTED);
    assert_non_null(strstr(err, "does not match"));
    /* A JWKS key without "alg": the curve alone must match the header's alg. */
    json_auto_t *noalg = json_deep_copy(jwks);
    json_t *k2 = json_array_get(json_object_get(noalg, "keys"), 0);
    json_object_del(k2, "alg");
    json_object_set_new(k2, "kid", json_string(jstr(key, "kid")));
    assert_int_equal(nt_ear_verify(token, noalg, &o, NULL, err), -EKEYREJECTED);
    assert_non_null(strstr(err, "does not match"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_size),
        cmocka_unit_test(test_vector),    cmocka_unit_test(test_tee_pubkey),
        cmocka_unit_test(test_hostile),   cmocka_unit_test(test_time_and_claims),
        cmocka_unit_test(test_es256),     cmocka_unit_test(test_verify_ex),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
