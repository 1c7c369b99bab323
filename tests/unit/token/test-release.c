/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Signed releases (token/release.h): seal and verify round trips (ES384 and ES256 signers,
 * P-384 and P-256 recipients, every key type's value size), the inner JWE decrypted by libjose
 * with the recipient's private key; every refusal: unsigned (alg none), a key that is not
 * pinned, a pinned kid over another key's signature, HS256 keyed with the public key, typ JWT,
 * a tampered JWS payload, a JWE whose header or ciphertext changed under the original signature
 * (and the unchanged one passing), unknown or mistyped members in H, the JWE header and the JWS
 * header, exp/iat with and without skew, oversize, a private recipient JWK and values of the
 * wrong size at seal time; and nt_jwks_load_public_file() for JWKS and PEM files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jose/b64.h>
#include <jose/jose.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "core/fileio.h"
#include "core/jose-openssl.h"
#include "core/openssl-util.h"
#include "token/release.h"

#define NOW 1800000000
static char tmpdir[] = "/tmp/nt-test-release-XXXXXX";
static NtSigningKeys *k384, *k256, *other;
static json_t *pinned; /* k384 and k256 */
static json_t *rcpt, *rcpt_pub, *rcpt256, *rcpt256_pub;

static json_t *gen_ec(const char *crv) {
    json_t *jwk = json_pack("{s:s,s:s}", "kty", "EC", "crv", crv);
    if (!jwk || !jose_jwk_gen(NULL, jwk))
        abort();
    (void)json_object_del(jwk, "key_ops");
    (void)json_object_del(jwk, "alg");
    return jwk;
}

static json_t *pub_of(const json_t *jwk) {
    json_t *p = json_deep_copy(jwk);
    if (!p || !jose_jwk_pub(NULL, p))
        abort();
    return p;
}

static NtSigningKeys *open_keys(const char *sub, NtJwsAlg alg) {
    char d[PATH_MAX];
    NtSigningKeys *k = NULL;
    snprintf(d, sizeof d, "%s/%s", tmpdir, sub);
    if (nt_signing_keys_open_dir(d, alg, &k, NULL) < 0)
        abort();
    return k;
}

static int setup(void **state) {
    json_auto_t *a = NULL, *b = NULL;
    if (!mkdtemp(tmpdir))
        return -1;
    k384 = open_keys("k384", NT_JWS_ES384);
    k256 = open_keys("k256", NT_JWS_ES256);
    other = open_keys("other", NT_JWS_ES384);
    a = nt_signing_keys_jwks(k384, NOW);
    b = nt_signing_keys_jwks(k256, NOW);
    pinned = json_pack("{s:[O,O]}", "keys", json_array_get(json_object_get(a, "keys"), 0),
                       json_array_get(json_object_get(b, "keys"), 0));
    rcpt = gen_ec("P-384");
    rcpt_pub = pub_of(rcpt);
    rcpt256 = gen_ec("P-256");
    rcpt256_pub = pub_of(rcpt256);
    return pinned ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[PATH_MAX + 16];
    json_decref(pinned);
    json_decref(rcpt);
    json_decref(rcpt_pub);
    json_decref(rcpt256);
    json_decref(rcpt256_pub);
    nt_signing_keys_free(k384);
    nt_signing_keys_free(k256);
    nt_signing_keys_free(other);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static NtReleaseInfo header(const char *type) {
    return (NtReleaseInfo){
        .name = (char *)"kms/db-key",
        .type = (char *)type,
        .version = 3,
        .policy = (char *)"attested",
        .max_age = 600,
        .label = (char *)"database key",
        .secret_id = (char *)"db-key.prod",
        .token_jti = (char *)"AAAAAAAAAAAAAAAAAAAAAA",
    };
}

static uint8_t value32[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                              17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* noinline: GCC 12 reports a false dangling pointer when this is inlined into callers. */
__attribute__((noinline)) static char *seal(NtSigningKeys *k, const json_t *to,
                                            const NtReleaseInfo *h, const void *v, size_t n) {
    char *rel = NULL;
    assert_int_equal(nt_release_seal(k, to, h, v, n, NOW, &rel), 0);
    return rel;
}

static void expect(const char *rel, time_t now, int want, const char *msg) {
    NtReleaseInfo info = {.name = (char *)0x1};
    char err[256], *jwe = (char *)0x1;
    int r = nt_release_verify(rel, pinned, now, 0, &info, &jwe, err);
    if (r != want)
        fail_msg("expected %d, got %d (%s)", want, r, err);
    if (r < 0) {
        assert_ptr_equal(info.name, (char *)0x1); /* not written on failure */
        assert_ptr_equal(jwe, (char *)0x1);
        assert_true(err[0] != 0);
        if (msg && !strstr(err, msg))
            fail_msg("message '%s' does not contain '%s'", err, msg);
    } else {
        nt_release_info_clear(&info);
        free(jwe);
    }
}

/* The JWS payload (the inner JWE) of a release, decoded. */
static char *payload_of(const char *rel) {
    const char *d1 = strchr(rel, '.'), *d2 = strrchr(rel, '.');
    size_t n = jose_b64_dec_buf(d1 + 1, (size_t)(d2 - d1 - 1), NULL, 0);
    char *p = calloc(1, n + 1);
    assert_non_null(p);
    assert_int_equal(jose_b64_dec_buf(d1 + 1, (size_t)(d2 - d1 - 1), p, n), n);
    return p;
}

/* rel with its payload replaced by jwe, the original header and signature kept. */
static char *with_payload(const char *rel, const char *jwe) {
    const char *d1 = strchr(rel, '.'), *d2 = strrchr(rel, '.');
    json_auto_t *p = jose_b64_enc(jwe, strlen(jwe));
    char *out = NULL;
    assert_true(asprintf(&out, "%.*s.%s%s", (int)(d1 - rel), rel, json_string_value(p), d2) > 0);
    return out;
}

static void decrypt_check(const char *jwe_compact, const json_t *priv, const void *want,
                          size_t want_len) {
    char *parts[5] = {};
    _cleanup_free_ char *copy = strdup(jwe_compact);
    char *save = NULL, *t = strtok_r(copy, ".", &save);
    for (size_t i = 0; i < 5; i++, t = strtok_r(NULL, ".", &save)) {
        assert_non_null(t);
        parts[i] = t;
    }
    json_auto_t *jwe = json_pack("{s:s,s:s,s:s,s:s,s:s}", "protected", parts[0], "encrypted_key",
                                 parts[1], "iv", parts[2], "ciphertext", parts[3], "tag", parts[4]);
    size_t n = 0;
    _cleanup_free_ uint8_t *pt = jose_jwe_dec(NULL, jwe, NULL, priv, &n);
    assert_non_null(pt);
    assert_int_equal(n, want_len);
    assert_memory_equal(pt, want, n);
}

static void test_roundtrip(void **state) {
    static const struct {
        const char *type;
        size_t len;
    } types[] = {{"aes256", 32}, {"hmac-sha256", 32}, {"hmac-sha384", 48},
                 {"raw", 1},     {"raw", 4096},       {"ec-p384", 185}};
    uint8_t big[4096];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    for (size_t t = 0; t < ELEMENTSOF(types); t++)
        for (int s = 0; s < 2; s++)
            for (int c = 0; c < 2; c++) {
                NtReleaseInfo h = header(types[t].type), info = {};
                json_auto_t *acl =
                    json_pack("{s:[i,i],s:[s],s:[i]}", "use_uid", 1000, 1001, "use_cgroup",
                              "/system.slice/db.service", "admin_gid", 0);
                _cleanup_free_ char *rel = NULL, *jwe = NULL;
                char err[256];
                h.acl = acl;
                rel = seal(s ? k256 : k384, c ? rcpt256_pub : rcpt_pub, &h, big, types[t].len);
                if (nt_release_verify(rel, pinned, NOW + 10, 0, &info, &jwe, err) != 0)
                    fail_msg("%s: %s", types[t].type, err);
                assert_string_equal(info.name, "kms/db-key");
                assert_string_equal(info.type, types[t].type);
                assert_int_equal(info.version, 3);
                assert_string_equal(info.policy, "attested");
                assert_int_equal(info.max_age, 600);
                assert_string_equal(info.label, "database key");
                assert_true(json_equal(info.acl, acl));
                assert_string_equal(info.secret_id, "db-key.prod");
                assert_string_equal(info.token_jti, "AAAAAAAAAAAAAAAAAAAAAA");
                assert_int_equal(strlen(info.jti), 22);
                assert_int_equal(info.iat, NOW);
                assert_int_equal(info.exp, NOW + NT_RELEASE_DEFAULT_LIFETIME_S);
                {
                    json_auto_t *thp = jose_jwk_thp(NULL, c ? rcpt256_pub : rcpt_pub, "S256");
                    assert_string_equal(info.recipient_kid, json_string_value(thp));
                }
                /* The inner JWE is exactly the signed payload, and decrypts to the value. */
                _cleanup_free_ char *p = payload_of(rel);
                assert_string_equal(p, jwe);
                decrypt_check(jwe, c ? rcpt256 : rcpt, big, types[t].len);
                nt_release_info_clear(&info);
            }
}

/* The agent reads the name a release will be imported as from its signed header (not from
 * kmsd's answer around it), without the pinned keys: a foreign signer still shows its name. */
static void test_peek_name(void **state) {
    NtReleaseInfo h = header("aes256");
    _cleanup_free_ char *rel = NULL, *foreign = NULL, *name = NULL, *name2 = NULL;
    h.name = (char *)"kms/other-key";
    rel = seal(k384, rcpt_pub, &h, value32, sizeof value32);
    foreign = seal(other, rcpt_pub, &h, value32, sizeof value32);
    assert_int_equal(nt_release_peek_name(rel, &name), 0);
    assert_string_equal(name, "kms/other-key");
    assert_int_equal(nt_release_peek_name(foreign, &name2), 0);
    assert_string_equal(name2, "kms/other-key");
    assert_int_equal(nt_release_peek_name("a.b.c", &(char *){NULL}), -EBADMSG);
    assert_int_equal(nt_release_peek_name("not a release", &(char *){NULL}), -EBADMSG);
    assert_int_equal(nt_release_peek_name(NULL, &(char *){NULL}), -EINVAL);
}

static void test_local_policy_and_defaults(void **state) {
    NtReleaseInfo h = header("aes256"), info = {};
    _cleanup_free_ char *rel = NULL;
    char err[256];
    h.policy = (char *)"local";
    h.max_age = 0;
    h.label = NULL;
    h.jti = (char *)"BBBBBBBBBBBBBBBBBBBBBB";
    h.iat = NOW - 10;
    h.exp = NOW + 20;
    rel = seal(k384, rcpt_pub, &h, value32, 32);
    assert_int_equal(nt_release_verify(rel, pinned, NOW, 0, &info, NULL, err), 0);
    assert_string_equal(info.policy, "local");
    assert_int_equal(info.max_age, 0);
    assert_null(info.label);
    assert_null(info.acl);
    assert_string_equal(info.jti, "BBBBBBBBBBBBBBBBBBBBBB");
    assert_int_equal(info.iat, NOW - 10);
    assert_int_equal(info.exp, NOW + 20);
    nt_release_info_clear(&info);
    /* Two seals of one header differ in jti (random) and in every JWE part. */
    {
        NtReleaseInfo h2 = header("aes256"), a = {}, b = {};
        _cleanup_free_ char *r1 = seal(k384, rcpt_pub, &h2, value32, 32);
        _cleanup_free_ char *r2 = seal(k384, rcpt_pub, &h2, value32, 32);
        assert_int_equal(nt_release_verify(r1, pinned, NOW, 0, &a, NULL, err), 0);
        assert_int_equal(nt_release_verify(r2, pinned, NOW, 0, &b, NULL, err), 0);
        assert_string_not_equal(a.jti, b.jti);
        assert_string_not_equal(r1, r2);
        nt_release_info_clear(&a);
        nt_release_info_clear(&b);
    }
}

static void test_seal_refusals(void **state) {
    NtReleaseInfo h = header("aes256");
    char *rel = NULL;
    json_auto_t *bad = NULL;

    /* A private JWK as recipient. */
    assert_int_equal(nt_release_seal(k384, rcpt, &h, value32, 32, NOW, &rel), -EINVAL);
    /* Not EC, or another curve. */
    bad = json_pack("{s:s,s:s}", "kty", "OKP", "crv", "Ed25519");
    assert_int_equal(nt_release_seal(k384, bad, &h, value32, 32, NOW, &rel), -EINVAL);
    {
        json_auto_t *p521 = gen_ec("P-521"), *pub = pub_of(p521);
        assert_int_equal(nt_release_seal(k384, pub, &h, value32, 32, NOW, &rel), -EINVAL);
    }
    /* A point not on the curve. */
    {
        json_auto_t *off = json_deep_copy(rcpt_pub);
        json_object_set(off, "y", json_object_get(rcpt_pub, "x"));
        assert_int_equal(nt_release_seal(k384, off, &h, value32, 32, NOW, &rel), -EINVAL);
    }
    /* Values of the wrong size for the type. */
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 31, NOW, &rel), -EINVAL);
    h.type = (char *)"hmac-sha384";
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h.type = (char *)"raw";
    {
        uint8_t big[NT_RELEASE_RAW_MAX + 1] = {};
        assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, big, sizeof big, NOW, &rel), -EINVAL);
        assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, big, 0, NOW, &rel), -EINVAL);
    }
    /* Headers the verifier would refuse. */
    h = header("aes256");
    h.name = (char *)"1000/db";
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h = header("aes256");
    h.type = (char *)"des";
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h = header("aes256");
    h.version = 0;
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h = header("aes256");
    h.max_age = 0; /* attested without max_age */
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h = header("aes256");
    h.policy = (char *)"local"; /* max_age with local */
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h = header("aes256");
    h.max_age = NT_RELEASE_MAX_AGE_MAX + 1;
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h = header("aes256");
    h.secret_id = (char *)"Bad-Id";
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h = header("aes256");
    h.label = (char *)"tab\there";
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    h = header("aes256");
    h.exp = NOW - 1; /* before iat */
    assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    {
        json_auto_t *acl = json_pack("{s:[i]}", "use_pid", 1);
        h = header("aes256");
        h.acl = acl;
        assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    }
    {
        json_auto_t *acl = json_pack("{s:[s]}", "use_cgroup", "/a/../b");
        h = header("aes256");
        h.acl = acl;
        assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    }
    {
        json_auto_t *acl = json_pack("{s:[I]}", "use_uid", (json_int_t)UINT32_MAX);
        h = header("aes256");
        h.acl = acl;
        assert_int_equal(nt_release_seal(k384, rcpt_pub, &h, value32, 32, NOW, &rel), -EINVAL);
    }
    assert_null(rel);
}

static char *b64s(const void *p, size_t n) {
    json_auto_t *j = jose_b64_enc(p, n);
    return strdup(json_string_value(j));
}

static void test_unsigned_and_foreign(void **state) {
    NtReleaseInfo h = header("aes256");
    _cleanup_free_ char *rel = seal(k384, rcpt_pub, &h, value32, 32);
    _cleanup_free_ char *jwe = payload_of(rel);
    _cleanup_free_ char *kid = nt_signing_keys_current_kid(k384, NOW);
    _cleanup_free_ char *p64 = b64s(jwe, strlen(jwe));

    expect(rel, NOW, 0, NULL);
    /* alg none, with and without a signature part. */
    {
        _cleanup_free_ char *hj = NULL, *h64 = NULL, *t1 = NULL, *t2 = NULL;
        assert_true(asprintf(&hj, "{\"alg\":\"none\",\"kid\":\"%s\",\"typ\":\"%s\"}", kid,
                             NT_RELEASE_TYP) > 0);
        h64 = b64s(hj, strlen(hj));
        assert_true(asprintf(&t1, "%s.%s.", h64, p64) > 0);
        assert_true(asprintf(&t2, "%s.%s.AAAA", h64, p64) > 0);
        expect(t1, NOW, -EBADMSG, "empty part");
        expect(t2, NOW, -EKEYREJECTED, "'none' refused");
    }
    /* The bare JWE (not signed at all). */
    expect(jwe, NOW, -EBADMSG, "three parts");
    /* Signed by a key that is not pinned. */
    {
        _cleanup_free_ char *r2 = seal(other, rcpt_pub, &h, value32, 32);
        expect(r2, NOW, -EKEYREJECTED, "not pinned");
    }
    /* A pinned kid over another key's signature. */
    {
        _cleanup_free_ char *r2 = seal(other, rcpt_pub, &h, value32, 32);
        _cleanup_free_ char *okid = nt_signing_keys_current_kid(other, NOW);
        _cleanup_free_ char *hj = NULL, *h64 = NULL, *forged = NULL;
        const char *sig = strrchr(r2, '.');
        _cleanup_free_ char *jwe2 = payload_of(r2);
        _cleanup_free_ char *p2 = b64s(jwe2, strlen(jwe2));
        assert_true(asprintf(&hj, "{\"alg\":\"ES384\",\"kid\":\"%s\",\"typ\":\"%s\"}", kid,
                             NT_RELEASE_TYP) > 0);
        h64 = b64s(hj, strlen(hj));
        assert_true(asprintf(&forged, "%s.%s%s", h64, p2, sig) > 0);
        assert_string_not_equal(okid, kid);
        expect(forged, NOW, -EKEYREJECTED, "does not verify");
    }
    /* alg and key mismatch: ES256 header naming the P-384 key. */
    {
        _cleanup_free_ char *hj = NULL, *h64 = NULL, *t = NULL;
        assert_true(asprintf(&hj, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"%s\"}", kid,
                             NT_RELEASE_TYP) > 0);
        h64 = b64s(hj, strlen(hj));
        assert_true(asprintf(&t, "%s.%s%s", h64, p64, strrchr(rel, '.')) > 0);
        expect(t, NOW, -EKEYREJECTED, "does not match key");
    }
    /* HS256 keyed with the public key (JSON text and its x coordinate). */
    {
        const json_t *pk = json_array_get(json_object_get(pinned, "keys"), 0);
        _cleanup_free_ char *pub = json_dumps(pk, JSON_COMPACT);
        const char *secrets[] = {pub, json_string_value(json_object_get(pk, "x"))};
        _cleanup_free_ char *hj = NULL, *h64 = NULL, *input = NULL;
        assert_true(asprintf(&hj, "{\"alg\":\"HS256\",\"kid\":\"%s\",\"typ\":\"%s\"}", kid,
                             NT_RELEASE_TYP) > 0);
        h64 = b64s(hj, strlen(hj));
        assert_true(asprintf(&input, "%s.%s", h64, p64) > 0);
        for (size_t i = 0; i < ELEMENTSOF(secrets); i++) {
            uint8_t mac[32];
            unsigned mlen = 0;
            _cleanup_free_ char *m64 = NULL, *t = NULL;
            assert_non_null(HMAC(EVP_sha256(), secrets[i], (int)strlen(secrets[i]),
                                 (const uint8_t *)input, strlen(input), mac, &mlen));
            m64 = b64s(mac, mlen);
            assert_true(asprintf(&t, "%s.%s", input, m64) > 0);
            expect(t, NOW, -EKEYREJECTED, "'HS256' refused");
        }
    }
    /* No kid. */
    {
        _cleanup_free_ char *h64 = NULL, *t = NULL;
        const char *hj = "{\"alg\":\"ES384\",\"typ\":\"" NT_RELEASE_TYP "\"}";
        h64 = b64s(hj, strlen(hj));
        assert_true(asprintf(&t, "%s.%s%s", h64, p64, strrchr(rel, '.')) > 0);
        expect(t, NOW, -EKEYREJECTED, "without kid");
    }
}

static void test_typ_and_jws_header(void **state) {
    NtReleaseInfo h = header("aes256");
    _cleanup_free_ char *rel = seal(k384, rcpt_pub, &h, value32, 32);
    _cleanup_free_ char *jwe = payload_of(rel);
    /* Signed by the pinned key, but as a JWT (typ JWT), or with another typ. */
    {
        _cleanup_free_ char *t = NULL;
        assert_int_equal(nt_signing_keys_sign(k384, NOW, jwe, strlen(jwe), &t, NULL), 0);
        expect(t, NOW, -EBADMSG, "typ 'JWT'");
    }
    {
        _cleanup_free_ char *t = NULL;
        assert_int_equal(nt_signing_keys_sign_typ(k384, NOW, "nitride-audit-head+jws", jwe,
                                                  strlen(jwe), &t, NULL),
                         0);
        expect(t, NOW, -EBADMSG, "is not " NT_RELEASE_TYP);
    }
    assert_int_equal(
        nt_signing_keys_sign_typ(k384, NOW, "", jwe, strlen(jwe), &(char *){NULL}, NULL), -EINVAL);
    /* Extra JWS header members (crit, jku) signed properly by the pinned key: refused. */
    {
        _cleanup_free_ char *kid = nt_signing_keys_current_kid(k384, NOW);
        const char *extras[] = {"\"crit\":[\"exp\"],\"exp\":1", "\"jku\":\"https://evil\"",
                                "\"x5u\":\"https://evil\""};
        for (size_t i = 0; i < ELEMENTSOF(extras); i++) {
            json_auto_t *hdr = NULL, *sig = NULL;
            json_auto_t *jws = json_pack("{s:o}", "payload", jose_b64_enc(jwe, strlen(jwe)));
            _cleanup_free_ char *hj = NULL, *t = NULL;
            const char *ph, *pp, *ps;
            assert_true(asprintf(&hj, "{\"alg\":\"ES384\",\"kid\":\"%s\",\"typ\":\"%s\",%s}", kid,
                                 NT_RELEASE_TYP, extras[i]) > 0);
            hdr = json_loads(hj, 0, NULL);
            assert_non_null(hdr);
            /* libjose signs with the private JWK read back from the state directory. */
            char path[PATH_MAX + 64];
            snprintf(path, sizeof path, "%s/k384/key-%s.json", tmpdir, kid);
            json_auto_t *file = json_load_file(path, 0, NULL);
            assert_non_null(file);
            sig = json_pack("{s:O}", "protected", hdr);
            assert_true(jose_jws_sig(NULL, jws, sig, json_object_get(file, "jwk")));
            assert_int_equal(json_unpack(jws, "{s:s,s:s,s:s}", "protected", &ph, "payload", &pp,
                                         "signature", &ps),
                             0);
            assert_true(asprintf(&t, "%s.%s.%s", ph, pp, ps) > 0);
            expect(t, NOW, -EBADMSG, "not allowed");
        }
    }
}

static void flip(char *s, size_t i) {
    s[i] = s[i] == 'A' ? 'B' : 'A';
}

static void test_tampering(void **state) {
    NtReleaseInfo h = header("aes256");
    _cleanup_free_ char *rel = seal(k384, rcpt_pub, &h, value32, 32);
    _cleanup_free_ char *jwe = payload_of(rel);

    /* The unchanged JWE under the original signature passes. */
    {
        _cleanup_free_ char *same = with_payload(rel, jwe);
        assert_string_equal(same, rel);
        expect(same, NOW, 0, NULL);
    }
    /* One changed character in the JWS payload part. */
    {
        _cleanup_free_ char *t = strdup(rel);
        flip(t, (size_t)(strchr(t, '.') - t) + 10);
        expect(t, NOW, -EKEYREJECTED, "does not verify");
    }
    /* In the signature. */
    {
        _cleanup_free_ char *t = strdup(rel);
        flip(t, strlen(t) - 5);
        expect(t, NOW, -EKEYREJECTED, "does not verify");
    }
    /* Each part of the inner JWE changed (header: another name; the others: one character),
     * under the original signature. */
    {
        size_t dots[4], nd = 0;
        for (size_t i = 0; jwe[i]; i++)
            if (jwe[i] == '.')
                dots[nd++] = i;
        assert_int_equal(nd, 4);
        /* the header, re-encoded with kms/other */
        {
            size_t hl = dots[0];
            size_t n = jose_b64_dec_buf(jwe, hl, NULL, 0);
            _cleanup_free_ char *hj = calloc(1, n + 1), *h2 = NULL, *h64 = NULL, *j2 = NULL,
                                *t = NULL;
            assert_int_equal(jose_b64_dec_buf(jwe, hl, hj, n), n);
            char *at = strstr(hj, "kms/db-key");
            assert_non_null(at);
            memcpy(at, "kms/db-kez", 10);
            h64 = b64s(hj, strlen(hj));
            assert_true(asprintf(&j2, "%s%s", h64, jwe + hl) > 0);
            t = with_payload(rel, j2);
            expect(t, NOW, -EKEYREJECTED, "does not verify");
        }
        for (size_t part = 1; part < 5; part++) {
            _cleanup_free_ char *j2 = strdup(jwe), *t = NULL;
            flip(j2, dots[part - 1] + 2);
            t = with_payload(rel, j2);
            expect(t, NOW, -EKEYREJECTED, "does not verify");
        }
    }
}

/* Builds a JWE with protected header prot (epk added by libjose) and signs it as a release with
 * k384: for headers that seal refuses to make. */
static char *forge(const json_t *prot, const void *v, size_t n) {
    json_auto_t *jwe = json_pack("{s:O}", "protected", prot), *cek = json_object();
    json_t *p;
    const char *a, *b = "", *c, *d, *e;
    _cleanup_free_ char *compact = NULL;
    char *rel = NULL;
    assert_true(jose_jwe_enc_jwk(NULL, jwe, NULL, rcpt_pub, cek));
    p = json_object_get(jwe, "protected");
    assert_int_equal(json_object_update(p, json_object_get(jwe, "header")), 0);
    (void)json_object_del(jwe, "header");
    assert_true(jose_jwe_enc_cek(NULL, jwe, cek, v, n));
    assert_int_equal(json_unpack(jwe, "{s:s,s?s,s:s,s:s,s:s}", "protected", &a, "encrypted_key", &b,
                                 "iv", &c, "ciphertext", &d, "tag", &e),
                     0);
    assert_true(asprintf(&compact, "%s.%s.%s.%s.%s", a, b, c, d, e) > 0);
    assert_int_equal(
        nt_signing_keys_sign_typ(k384, NOW, NT_RELEASE_TYP, compact, strlen(compact), &rel, NULL),
        0);
    return rel;
}

static json_t *good_h(void) {
    return json_pack("{s:i,s:s,s:s,s:i,s:s,s:i,s:s,s:s,s:I,s:I,s:s}", "v", 1, "name", "kms/x",
                     "type", "aes256", "version", 1, "policy", "attested", "max_age", 60,
                     "secret_id", "x", "jti", "CCCCCCCCCCCCCCCCCCCCCC", "iat", (json_int_t)NOW,
                     "exp", (json_int_t)NOW + 300, "token_jti", "DDDD");
}

static json_t *good_prot(json_t *h) {
    json_auto_t *thp = jose_jwk_thp(NULL, rcpt_pub, "S256");
    return json_pack("{s:s,s:s,s:O,s:s,s:o}", "alg", "ECDH-ES+A256KW", "enc", "A256GCM", "kid", thp,
                     "cty", NT_RELEASE_CTY, "nitride", h);
}

static void test_strict_headers(void **state) {
    /* The forger itself makes acceptable releases. */
    {
        json_auto_t *prot = good_prot(good_h());
        _cleanup_free_ char *rel = forge(prot, value32, 32);
        expect(rel, NOW, 0, NULL);
    }
    /* H: unknown members and wrong types. */
    static const struct {
        const char *member;
        const char *json; /* NULL: delete the member */
        const char *msg;
    } hcases[] = {
        {"extra", "1", "unknown member 'extra'"},
        {"v", "2", "\"v\" is not 1"},
        {"v", NULL, "\"v\" is not 1"},
        {"name", "\"x\"", "not kms/<name>"},
        {"name", "\"kms/.hidden\"", "not kms/<name>"},
        {"name", "\"kms/a/b\"", "not kms/<name>"},
        {"name", "5", "\"name\" missing or not a string"},
        {"type", "\"aes128\"", "unknown key type"},
        {"version", "\"1\"", "version is not an integer"},
        {"version", "0", "version is not an integer"},
        {"version", "4294967296", "version is not an integer"},
        {"policy", "\"always\"", "unknown policy"},
        {"max_age", NULL, "needs max_age"},
        {"max_age", "604801", "needs max_age"},
        {"max_age", "1.5", "needs max_age"},
        {"label", "7", "label is not a string"},
        {"acl", "[]", "acl is not an object"},
        {"acl", "{\"use_uid\":[\"root\"]}", "invalid entry in acl.use_uid"},
        {"acl", "{\"use_uid\":[-1]}", "invalid entry in acl.use_uid"},
        {"acl", "{\"use_cgroup\":[\"relative\"]}", "invalid entry in acl.use_cgroup"},
        {"acl", "{\"everyone\":[]}", "unknown acl member"},
        {"secret_id", "\"../x\"", "invalid secret_id"},
        {"jti", "\"short\"", "jti is not base64url"},
        {"token_jti", "\"a b\"", "invalid token_jti"},
        {"token_jti", NULL, "\"token_jti\" missing"},
        {"iat", "\"now\"", "iat or exp missing"},
        {"exp", NULL, "iat or exp missing"},
        {"exp", "1800000000", "exp must follow iat"},
    };
    for (size_t i = 0; i < ELEMENTSOF(hcases); i++) {
        json_t *h = good_h();
        json_auto_t *prot = NULL;
        _cleanup_free_ char *rel = NULL;
        if (hcases[i].json) {
            json_t *v = json_loads(hcases[i].json, JSON_DECODE_ANY, NULL);
            assert_non_null(v);
            json_object_set_new(h, hcases[i].member, v);
        } else
            json_object_del(h, hcases[i].member);
        prot = good_prot(h);
        rel = forge(prot, value32, 32);
        expect(rel, NOW, -EBADMSG, hcases[i].msg);
    }
    /* max_age with policy local. */
    {
        json_t *h = good_h();
        json_object_set_new(h, "policy", json_string("local"));
        json_auto_t *prot = good_prot(h);
        _cleanup_free_ char *rel = forge(prot, value32, 32);
        expect(rel, NOW, -EBADMSG, "max_age given with policy local");
    }
    /* The JWE header: extra members, wrong values, missing members. */
    static const struct {
        const char *member;
        const char *json;
        const char *msg;
    } jcases[] = {
        {"zip", "\"DEF\"", "'zip' not allowed"},
        {"crit", "[\"nitride\"]", "'crit' not allowed"},
        {"typ", "\"JWE\"", "'typ' not allowed"},
        {"apu", "\"QUJD\"", "'apu' not allowed"},
        {"cty", "\"JWT\"", "cty 'JWT'"},
        {"cty", NULL, "missing"},
        {"kid", "\"short\"", "kid is not an RFC 7638"},
        {"nitride", "\"x\"", "\"nitride\" is not an object"},
        {"nitride", NULL, "\"nitride\" is not an object"},
    };
    for (size_t i = 0; i < ELEMENTSOF(jcases); i++) {
        json_auto_t *prot = good_prot(good_h());
        _cleanup_free_ char *rel = NULL;
        if (jcases[i].json)
            json_object_set_new(prot, jcases[i].member,
                                json_loads(jcases[i].json, JSON_DECODE_ANY, NULL));
        else
            json_object_del(prot, jcases[i].member);
        rel = forge(prot, value32, 32);
        expect(rel, NOW, -EBADMSG, jcases[i].msg);
    }
    /* enc A128GCM (libjose honours it): refused by name. */
    {
        json_auto_t *prot = good_prot(good_h());
        json_object_set_new(prot, "enc", json_string("A128GCM"));
        _cleanup_free_ char *rel = forge(prot, value32, 32);
        expect(rel, NOW, -EBADMSG, "enc 'A128GCM'");
    }
    /* alg ECDH-ES (direct, no key wrap). */
    {
        json_auto_t *prot = good_prot(good_h());
        json_object_set_new(prot, "alg", json_string("ECDH-ES"));
        _cleanup_free_ char *rel = forge(prot, value32, 32);
        expect(rel, NOW, -EBADMSG, NULL); /* no encrypted key: an empty part */
    }
    /* The payload is not a JWE: a JSON text, four parts, six parts. */
    {
        const char *bad[] = {"{\"a\":1}", "a.b.c.d", "a.b.c.d.e.f", "a..c.d.e", "a.b.c.d.e"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
            _cleanup_free_ char *rel = NULL;
            assert_int_equal(nt_signing_keys_sign_typ(k384, NOW, NT_RELEASE_TYP, bad[i],
                                                      strlen(bad[i]), &rel, NULL),
                             0);
            expect(rel, NOW, -EBADMSG, NULL);
        }
    }
}

static void test_times(void **state) {
    NtReleaseInfo h = header("aes256");
    _cleanup_free_ char *rel = seal(k384, rcpt_pub, &h, value32, 32);
    int64_t exp = NOW + NT_RELEASE_DEFAULT_LIFETIME_S;
    char err[256];

    expect(rel, (time_t)(exp + NT_RELEASE_DEFAULT_SKEW_S - 1), 0, NULL);
    expect(rel, (time_t)(exp + NT_RELEASE_DEFAULT_SKEW_S), -EKEYEXPIRED, "expired");
    /* skew < 0: none. */
    assert_int_equal(nt_release_verify(rel, pinned, (time_t)exp, -1, NULL, NULL, err),
                     -EKEYEXPIRED);
    assert_int_equal(nt_release_verify(rel, pinned, (time_t)exp - 1, -1, NULL, NULL, err), 0);
    /* Issued in the future. */
    expect(rel, NOW - NT_RELEASE_DEFAULT_SKEW_S, 0, NULL);
    expect(rel, NOW - NT_RELEASE_DEFAULT_SKEW_S - 1, -EBADMSG, "in the future");
    assert_int_equal(nt_release_verify(rel, pinned, NOW - 1, -1, NULL, NULL, err), -EBADMSG);
    assert_int_equal(nt_release_verify(rel, pinned, NOW - 100, 200, NULL, NULL, err), 0);
}

static void test_oversize_and_garbage(void **state) {
    char *big = malloc(NT_RELEASE_MAX_SIZE + 2);
    char err[256];
    assert_non_null(big);
    memset(big, 'A', NT_RELEASE_MAX_SIZE + 1);
    big[NT_RELEASE_MAX_SIZE + 1] = 0;
    expect(big, NOW, -EMSGSIZE, "larger than");
    free(big);
    expect("", NOW, -EBADMSG, NULL);
    expect("a.b", NOW, -EBADMSG, NULL);
    expect("a.b.c.d", NOW, -EBADMSG, NULL);
    expect("a+b.c.d", NOW, -EBADMSG, NULL);
    expect("e30.e30.e30", NOW, -EBADMSG, "without a string alg");
    assert_int_equal(nt_release_verify(NULL, pinned, NOW, 0, NULL, NULL, err), -EINVAL);
    assert_int_equal(nt_release_verify("a.b.c", NULL, NOW, 0, NULL, NULL, err), -EINVAL);
}

static void write_text(const char *path, const char *text) {
    assert_int_equal(write_file_atomic(path, text, strlen(text), 0644), 0);
}

static char *pem_of(const json_t *jwk, bool priv) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk = jose_openssl_jwk_to_EVP_PKEY(NULL, jwk);
    _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *out;
    long n;
    assert_non_null(pk);
    assert_true(priv ? PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL)
                     : PEM_write_bio_PUBKEY(b, pk));
    n = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)n);
    assert_non_null(out);
    return out;
}

static void test_load_pinned(void **state) {
    char path[PATH_MAX];
    json_auto_t *jwks = NULL;
    char *error = NULL;
    snprintf(path, sizeof path, "%s/pinned", tmpdir);

    /* A JWKS (kmsd's GET /v1/release-keys) verifies the releases of its keys. */
    {
        _cleanup_free_ char *text = json_dumps(pinned, 0);
        NtReleaseInfo h = header("aes256");
        _cleanup_free_ char *rel = seal(k256, rcpt_pub, &h, value32, 32);
        char err[256];
        write_text(path, text);
        assert_int_equal(nt_jwks_load_public_file(path, &jwks, &error), 0);
        assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 2);
        assert_int_equal(nt_release_verify(rel, jwks, NOW, 0, NULL, NULL, err), 0);
        json_decref(jwks);
        jwks = NULL;
    }
    /* Concatenated PEM public keys: kid = thumbprint, alg by curve. */
    {
        _cleanup_free_ char *p1 = pem_of(rcpt_pub, false), *p2 = pem_of(rcpt256_pub, false),
                            *both = NULL;
        json_auto_t *t1 = jose_jwk_thp(NULL, rcpt_pub, "S256");
        assert_true(asprintf(&both, "%s\n%s", p1, p2) > 0);
        write_text(path, both);
        assert_int_equal(nt_jwks_load_public_file(path, &jwks, &error), 0);
        const json_t *k0 = json_array_get(json_object_get(jwks, "keys"), 0);
        const json_t *k1 = json_array_get(json_object_get(jwks, "keys"), 1);
        assert_string_equal(json_string_value(json_object_get(k0, "kid")), json_string_value(t1));
        assert_string_equal(json_string_value(json_object_get(k0, "alg")), "ES384");
        assert_string_equal(json_string_value(json_object_get(k1, "alg")), "ES256");
        json_decref(jwks);
        jwks = NULL;
        /* The same key twice: refused. */
        free(both);
        assert_true(asprintf(&both, "%s%s", p1, p1) > 0);
        write_text(path, both);
        assert_int_equal(nt_jwks_load_public_file(path, &jwks, &error), -EBADMSG);
        assert_non_null(strstr(error, "two keys"));
    }
    /* Refused: a private key (PEM or JWK), RSA, P-521, empty, not JSON, alg mismatch. */
    {
        _cleanup_free_ char *pp = pem_of(rcpt, true), *jw = json_dumps(rcpt, 0), *jwks_priv = NULL;
        json_auto_t *p521 = gen_ec("P-521"), *p521pub = pub_of(p521);
        _cleanup_free_ char *p521pem = pem_of(p521pub, false), *mism = NULL;
        _cleanup_free_ char *pubj = json_dumps(rcpt_pub, JSON_COMPACT);
        assert_true(asprintf(&jwks_priv, "{\"keys\":[%s]}", jw) > 0);
        assert_true(asprintf(&mism, "{\"keys\":[%.*s,\"alg\":\"ES256\"}]}", (int)strlen(pubj) - 1,
                             pubj) > 0);
        const struct {
            const char *text, *msg;
        } bad[] = {
            {pp, "private key"},
            {jwks_priv, "private key"},
            {p521pem, "curve"},
            {"", "no public key"},
            {"{\"keys\":[]}", "no public key"},
            {"{\"kty\":\"EC\"}", "not a JWKS"},
            {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "not an EC"},
            {mism, "alg does not match"},
            {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "no public key"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
            write_text(path, bad[i].text);
            assert_int_equal(nt_jwks_load_public_file(path, &jwks, &error), -EBADMSG);
            if (!strstr(error, bad[i].msg))
                fail_msg("case %zu: '%s' lacks '%s'", i, error, bad[i].msg);
        }
    }
    snprintf(path, sizeof path, "%s/absent", tmpdir);
    assert_int_equal(nt_jwks_load_public_file(path, &jwks, &error), -ENOENT);
    free(error);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_peek_name),
        cmocka_unit_test(test_local_policy_and_defaults),
        cmocka_unit_test(test_seal_refusals),
        cmocka_unit_test(test_unsigned_and_foreign),
        cmocka_unit_test(test_typ_and_jws_header),
        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_strict_headers),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_oversize_and_garbage),
        cmocka_unit_test(test_load_pinned),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
