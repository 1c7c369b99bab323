/* SPDX-License-Identifier: Apache-2.0 */
#include "attestd/request.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jose-openssl.h"
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "core/encoding.h"
#include "core/jcs.h"
#include "snp/report.h"

#define MAX_BODY (1024 * 1024)

static int efail(AttestdError *e, unsigned status, const char *result, const char *check,
                 const char *expected, const char *found, const char *fmt, ...) _printf_(7, 8);
static int efail(AttestdError *e, unsigned status, const char *result, const char *check,
                 const char *expected, const char *found, const char *fmt, ...) {
    va_list ap;
    e->status = status;
    e->result = result;
    e->check = check;
    va_start(ap, fmt);
    vsnprintf(e->error, sizeof e->error, fmt, ap);
    va_end(ap);
    snprintf(e->expected, sizeof e->expected, "%s", expected ? expected : "");
    snprintf(e->found, sizeof e->found, "%s", found ? found : "");
    return -EBADMSG;
}

static size_t json_depth(const json_t *j, size_t limit) {
    size_t d = 0, i;
    const char *k;
    json_t *v;

    if (limit == 0)
        return 1;
    if (json_is_object(j)) {
        json_object_foreach((json_t *)j, k, v) d = MAX(d, json_depth(v, limit - 1));
        return d + 1;
    }
    if (json_is_array(j)) {
        json_array_foreach(j, i, v) d = MAX(d, json_depth(v, limit - 1));
        return d + 1;
    }
    return 0;
}

static int load_object(const uint8_t *body, size_t len, json_t **ret, AttestdError *e) {
    json_error_t jerr;
    json_t *j;

    if (len > MAX_BODY)
        return efail(e, 413, "malformed", "request", NULL, NULL, "body too large");
    j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return efail(e, 400, "malformed", "request", NULL, NULL, "body is not JSON: line %d: %s",
                     jerr.line, jerr.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return efail(e, 400, "malformed", "request", NULL, NULL, "body must be a JSON object");
    }
    if (json_depth(j, ATTESTD_MAX_JSON_DEPTH + 1) > ATTESTD_MAX_JSON_DEPTH) {
        json_decref(j);
        return efail(e, 400, "malformed", "request", NULL, NULL, "body nests deeper than %d levels",
                     ATTESTD_MAX_JSON_DEPTH);
    }
    *ret = j;
    return 0;
}

/* Returns 1 for a newer 1.x minor, 0 for a known version or none, -EBADMSG otherwise. */
static int check_version(json_t *req, AttestdError *e) {
    json_t *v = json_object_get(req, "version");
    unsigned major = 0, minor = 0;
    char expected[64];

    if (!v)
        return 0;
    snprintf(expected, sizeof expected, "%d.0 to %d.%d (every %d.x is accepted)",
             ATTESTD_PROTO_MAJOR, ATTESTD_PROTO_MAJOR, ATTESTD_PROTO_MINOR, ATTESTD_PROTO_MAJOR);
    const char *vs = json_string_value(v);
    char *end = NULL;
    bool ok = vs && json_string_length(v) <= 9 && vs[0] >= '0' && vs[0] <= '9';
    if (ok) {
        unsigned long ma = strtoul(vs, &end, 10), mi = 0;
        ok = *end == '.' && end[1] >= '0' && end[1] <= '9';
        if (ok)
            mi = strtoul(end + 1, &end, 10);
        ok = ok && *end == 0 && ma <= 999 && mi <= 999;
        major = (unsigned)ma;
        minor = (unsigned)mi;
    }
    if (!ok)
        return efail(e, 400, "malformed", "version", expected,
                     json_is_string(v) ? json_string_value(v) : "not a string",
                     "version: expected \"MAJOR.MINOR\"");
    if (major != ATTESTD_PROTO_MAJOR)
        return efail(e, 400, "version", "version", expected, json_string_value(v),
                     "protocol version %u.%u is not supported", major, minor);
    return minor > ATTESTD_PROTO_MINOR;
}

static int check_members(json_t *obj, const char *where, const char *const *known, bool lenient,
                         AttestdError *e) {
    const char *k;
    json_t *v;
    if (lenient)
        return 0;
    json_object_foreach(obj, k, v) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = streq(known[i], k);
        if (!ok)
            return efail(e, 400, "malformed", "request", NULL, NULL, "%s: unknown member '%.64s'",
                         where, k);
    }
    return 0;
}

int attestd_challenge_request_parse(const uint8_t *body, size_t len, AttestdError *e) {
    static const char *const known[] = {"version", NULL};
    json_t *j = NULL;
    int r;

    if (len == 0)
        return 0;
    r = load_object(body, len, &j, e);
    if (r < 0)
        return r;
    r = check_version(j, e);
    if (r >= 0)
        r = check_members(j, "request", known, r > 0, e);
    json_decref(j);
    return r < 0 ? r : 0;
}

int attestd_evidence_certs(const json_t *evidence, NtCertBundle *bundle, char err[static 200]) {
    json_t *table = json_object_get(evidence, "cert_table");
    json_t *certs = json_object_get(evidence, "certs");
    int r;

    if (table && certs) {
        snprintf(err, 200, "evidence: give 'cert_table' or 'certs', not both");
        return -EBADMSG;
    }
    if (table) {
        _cleanup_free_ uint8_t *raw = NULL;
        size_t len = 0;
        if (!json_is_string(table) ||
            base64url_decode_alloc(json_string_value(table), json_string_length(table), &raw,
                                   &len) < 0) {
            snprintf(err, 200, "evidence.cert_table: expected base64url");
            return -EBADMSG;
        }
        r = nt_cert_bundle_add_table(bundle, raw, len);
        if (r < 0) {
            snprintf(err, 200, "evidence.cert_table: %s",
                     r == -ENOENT ? "holds no certificates" : "malformed certificate table");
            return r == -ENOMEM ? r : -EBADMSG;
        }
    }
    if (certs) {
        size_t i;
        json_t *c;
        if (!json_is_array(certs) || json_array_size(certs) > ATTESTD_MAX_CERTS_IN_REQUEST) {
            snprintf(err, 200, "evidence.certs: expected an array of at most %d certificates",
                     ATTESTD_MAX_CERTS_IN_REQUEST);
            return -EBADMSG;
        }
        json_array_foreach(certs, i, c) {
            _cleanup_free_ uint8_t *raw = NULL;
            size_t len = 0;
            const char *s = json_string_value(c);
            char origin[64];
            if (!s) {
                snprintf(err, 200, "evidence.certs[%zu]: expected a string", i);
                return -EBADMSG;
            }
            snprintf(origin, sizeof origin, "evidence.certs[%zu]", i);
            if (strncmp(s, "-----BEGIN", 10) == 0)
                r = nt_cert_bundle_add(bundle, (const uint8_t *)s, json_string_length(c),
                                       _NT_CERT_ROLE_INVALID, origin);
            else if (base64url_decode_alloc(s, json_string_length(c), &raw, &len) < 0)
                r = -EBADMSG;
            else
                r = nt_cert_bundle_add(bundle, raw, len, _NT_CERT_ROLE_INVALID, origin);
            if (r == -ENOMEM)
                return r;
            if (r < 0) {
                snprintf(err, 200, "evidence.certs[%zu]: %s", i,
                         r == -E2BIG ? "too many certificates"
                                     : "not a PEM or base64url DER AMD certificate");
                return -EBADMSG;
            }
        }
    }
    return 0;
}

/* An EC public JWK as an OpenSSL key: x and y of the curve's size, and a point on the curve
 * (OpenSSL checks that when it decodes the point). libjose's conversion also multiplies the
 * point by the group order, which costs as much as a signature and proves nothing more on these
 * prime-order curves. */
static EVP_PKEY *ec_public_key(json_t *jwk, const char *crv) {
    static const struct {
        const char *jwk, *ossl;
        size_t len;
    } curves[] = {{"P-256", "P-256", 32}, {"P-384", "P-384", 48}, {"P-521", "P-521", 66}};
    _cleanup_free_ uint8_t *x = NULL, *y = NULL;
    uint8_t point[1 + 2 * 66];
    size_t xl = 0, yl = 0, n = 0;
    const char *name = NULL, *xs, *ys;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pk = NULL;

    for (size_t i = 0; i < ELEMENTSOF(curves); i++)
        if (streq(crv, curves[i].jwk))
            name = curves[i].ossl, n = curves[i].len;
    xs = json_string_value(json_object_get(jwk, "x"));
    ys = json_string_value(json_object_get(jwk, "y"));
    if (!name || !xs || !ys || base64url_decode_alloc(xs, strlen(xs), &x, &xl) < 0 ||
        base64url_decode_alloc(ys, strlen(ys), &y, &yl) < 0 || xl != n || yl != n)
        return NULL;
    point[0] = 0x04;
    memcpy(point + 1, x, n);
    memcpy(point + 1 + n, y, n);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)name, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * n),
        OSSL_PARAM_construct_end(),
    };
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    return pk;
}

/* An OKP (X25519/X448) public JWK: x of the curve's size (libjose's OpenSSL glue has no OKP). */
static EVP_PKEY *okp_public_key(json_t *jwk, const char *crv) {
    _cleanup_free_ uint8_t *x = NULL;
    size_t xl = 0;
    const char *xs = json_string_value(json_object_get(jwk, "x"));
    int type = streq(crv, "X25519") ? EVP_PKEY_X25519 : EVP_PKEY_X448;
    size_t want = type == EVP_PKEY_X25519 ? 32 : 56;

    if (!xs || base64url_decode_alloc(xs, strlen(xs), &x, &xl) < 0 || xl != want)
        return NULL;
    return EVP_PKEY_new_raw_public_key(type, NULL, x, xl);
}

/* The tee-pubkey must be a public JWK of a kind relying parties can encrypt to without
 * ambiguity: only the members its kty defines (plus kid, alg, use), an allowed curve or an RSA
 * modulus of at least 2048 bits, and a key OpenSSL accepts. */
static int check_tee_pubkey(json_t *jwk, AttestdError *e) {
    static const char *const common[] = {"kty", "kid", "alg", "use"};
    static const char *const ec[] = {"crv", "x", "y"};
    static const char *const rsa[] = {"n", "e"};
    static const char *const okp[] = {"crv", "x"};
    const char *const *own;
    size_t n_own;
    const char *kty, *k, *crv;
    json_t *v;
    EVP_PKEY *pk;

    if (!json_is_object(jwk))
        return efail(e, 400, "malformed", "request", NULL, NULL,
                     "runtime_data.tee-pubkey: missing or not a JWK object");
    kty = json_string_value(json_object_get(jwk, "kty"));
    if (kty && streq(kty, "EC"))
        own = ec, n_own = ELEMENTSOF(ec);
    else if (kty && streq(kty, "RSA"))
        own = rsa, n_own = ELEMENTSOF(rsa);
    else if (kty && streq(kty, "OKP"))
        own = okp, n_own = ELEMENTSOF(okp);
    else
        return efail(e, 400, "malformed", "request", "EC, RSA or OKP", kty ? kty : "none",
                     "runtime_data.tee-pubkey: unsupported kty");
    json_object_foreach(jwk, k, v) {
        bool known = false;
        for (size_t i = 0; i < ELEMENTSOF(common) && !known; i++)
            known = streq(common[i], k);
        for (size_t i = 0; i < n_own && !known; i++)
            known = streq(own[i], k);
        if (!known)
            return efail(e, 400, "malformed", "request", NULL, NULL,
                         "runtime_data.tee-pubkey: member '%.32s' is not allowed in a public %s "
                         "key (private parts, certificate or URL members are refused)",
                         k, kty);
        if (!json_is_string(v))
            return efail(e, 400, "malformed", "request", NULL, NULL,
                         "runtime_data.tee-pubkey.%.32s: expected a string", k);
    }
    crv = json_string_value(json_object_get(jwk, "crv"));
    if (streq(kty, "EC") &&
        (!crv || (!streq(crv, "P-256") && !streq(crv, "P-384") && !streq(crv, "P-521"))))
        return efail(e, 400, "malformed", "request", "P-256, P-384 or P-521", crv ? crv : "none",
                     "runtime_data.tee-pubkey: unsupported curve");
    if (streq(kty, "OKP") && (!crv || (!streq(crv, "X25519") && !streq(crv, "X448"))))
        return efail(e, 400, "malformed", "request", "X25519 or X448", crv ? crv : "none",
                     "runtime_data.tee-pubkey: unsupported curve (a key to encrypt to)");
    /* A key to encrypt secrets to: "use" may only say so, and "alg" must be a key-management
     * algorithm of its kind. */
    const char *use = json_string_value(json_object_get(jwk, "use"));
    const char *alg = json_string_value(json_object_get(jwk, "alg"));
    if (use && !streq(use, "enc"))
        return efail(e, 400, "malformed", "request", "enc", use,
                     "runtime_data.tee-pubkey: use must be enc (a key secrets are encrypted to)");
    if (alg) {
        static const char *const ec_algs[] = {"ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A192KW",
                                              "ECDH-ES+A256KW"};
        static const char *const rsa_algs[] = {"RSA-OAEP", "RSA-OAEP-256", "RSA-OAEP-384",
                                               "RSA-OAEP-512"};
        bool is_rsa = streq(kty, "RSA"), ok = false;
        for (size_t i = 0; i < 4 && !ok; i++)
            ok = streq(alg, is_rsa ? rsa_algs[i] : ec_algs[i]);
        if (!ok)
            return efail(e, 400, "malformed", "request",
                         is_rsa ? "RSA-OAEP, RSA-OAEP-256/384/512" : "ECDH-ES[+A128/192/256KW]",
                         alg,
                         "runtime_data.tee-pubkey: alg is not a key-management algorithm "
                         "for this key type");
    }
    pk = streq(kty, "EC")    ? ec_public_key(jwk, crv)
         : streq(kty, "OKP") ? okp_public_key(jwk, crv)
                             : jose_openssl_jwk_to_EVP_PKEY(NULL, jwk);
    if (!pk)
        return efail(e, 400, "malformed", "request", NULL, NULL,
                     "runtime_data.tee-pubkey: not a valid %s public key", kty);
    int bits = EVP_PKEY_get_bits(pk);
    bool rsa_key = EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA;
    BIGNUM *exp = NULL;
    bool exp_ok = !rsa_key;
    if (rsa_key && EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &exp) == 1)
        /* An odd public exponent of at least 65537 (e = 1 is no encryption at all). */
        exp_ok = BN_is_odd(exp) && BN_num_bits(exp) >= 17 && BN_num_bits(exp) <= 256;
    BN_free(exp);
    EVP_PKEY_free(pk);
    if (!exp_ok)
        return efail(e, 400, "malformed", "request", "an odd exponent of at least 65537", NULL,
                     "runtime_data.tee-pubkey: RSA public exponent");
    if (rsa_key && (bits < 2048 || bits > 8192)) {
        char found[16];
        snprintf(found, sizeof found, "%d bits", bits);
        return efail(e, 400, "malformed", "request", "2048 to 8192 bits", found,
                     "runtime_data.tee-pubkey: RSA modulus size");
    }
    return 0;
}

void attestd_attest_request_done(AttestdAttestRequest *r) {
    json_decref(r->body);
    free(r->report);
    nt_cert_bundle_free(r->certs);
    memset(r, 0, sizeof *r);
}

int attestd_attest_request_parse(const uint8_t *body, size_t len, AttestdAttestRequest *ret,
                                 AttestdError *e) {
    static const char *const known[] = {"version",      "nonce",     "evidence",
                                        "runtime_data", "policy_id", NULL};
    static const char *const known_ev[] = {"report", "cert_table", "certs", NULL};
    AttestdAttestRequest r = {0};
    json_t *evidence, *jv;
    char err[200];
    int k;

    memset(ret, 0, sizeof *ret);
    k = load_object(body, len, &r.body, e);
    if (k < 0)
        return k;
    k = check_version(r.body, e);
    if (k < 0)
        goto fail;
    r.lenient = k > 0;
    if ((k = check_members(r.body, "request", known, r.lenient, e)) < 0)
        goto fail;

    r.nonce = json_string_value(json_object_get(r.body, "nonce"));
    if (!r.nonce) {
        k = efail(e, 400, "malformed", "nonce", NULL, NULL, "nonce: missing or not a string");
        goto fail;
    }
    evidence = json_object_get(r.body, "evidence");
    if (!json_is_object(evidence)) {
        k = efail(e, 400, "malformed", "request", NULL, NULL, "evidence: missing or not an object");
        goto fail;
    }
    if ((k = check_members(evidence, "evidence", known_ev, r.lenient, e)) < 0)
        goto fail;
    r.runtime_data = json_object_get(r.body, "runtime_data");
    if (!json_is_object(r.runtime_data)) {
        k = efail(e, 400, "malformed", "request", NULL, NULL,
                  "runtime_data: missing or not an object");
        goto fail;
    }
    if (!json_is_string(json_object_get(r.runtime_data, "nonce"))) {
        k = efail(e, 400, "malformed", "request", NULL, NULL,
                  "runtime_data.nonce: missing or not a string");
        goto fail;
    }
    if ((k = check_tee_pubkey(json_object_get(r.runtime_data, "tee-pubkey"), e)) < 0)
        goto fail;
    {
        /* runtime_data goes into the token: keep tokens small enough for an HTTP header. */
        char *compact = json_dumps(r.runtime_data, JSON_COMPACT);
        size_t clen = compact ? strlen(compact) : SIZE_MAX;
        free(compact);
        if (clen > ATTESTD_MAX_RUNTIME_DATA) {
            char want[32], got[32];
            snprintf(want, sizeof want, "at most %d bytes", ATTESTD_MAX_RUNTIME_DATA);
            snprintf(got, sizeof got, "%zu bytes", clen);
            k = efail(e, 400, "malformed", "request", want, got,
                      "runtime_data: too large (it is copied into the token)");
            goto fail;
        }
    }
    jv = json_object_get(r.body, "policy_id");
    if (jv && !json_is_string(jv)) {
        k = efail(e, 400, "malformed", "policy_id", NULL, NULL, "policy_id: expected a string");
        goto fail;
    }
    r.policy_id = json_string_value(jv);

    jv = json_object_get(evidence, "report");
    if (!json_is_string(jv) || base64url_decode_alloc(json_string_value(jv), json_string_length(jv),
                                                      &r.report, &r.report_len) < 0) {
        k = efail(e, 400, "malformed", "report_format", NULL, NULL,
                  "evidence.report: missing or not base64url");
        goto fail;
    }
    if (r.report_len != SNP_REPORT_SIZE) {
        char want[16], got[24];
        snprintf(want, sizeof want, "%d bytes", SNP_REPORT_SIZE);
        snprintf(got, sizeof got, "%zu bytes", r.report_len);
        k = efail(e, 400, "malformed", "report_format", want, got, "evidence.report: wrong length");
        goto fail;
    }
    r.certs = nt_cert_bundle_new();
    if (!r.certs) {
        k = -ENOMEM;
        goto fail;
    }
    k = attestd_evidence_certs(evidence, r.certs, err);
    if (k == -ENOMEM)
        goto fail;
    if (k < 0) {
        k = efail(e, 400, "malformed", "certificates", NULL, NULL, "%s", err);
        goto fail;
    }
    *ret = r;
    return 0;
fail:
    attestd_attest_request_done(&r);
    return k;
}

int attestd_runtime_binding(const json_t *runtime_data, uint8_t out[64]) {
    _cleanup_free_ char *canon = NULL;
    size_t len = 0;
    unsigned int n = 0;
    int r;

    r = nt_jcs_dump(runtime_data, &canon, &len);
    if (r < 0)
        return r;
    memset(out, 0, 64);
    if (EVP_Digest(canon, len, out, &n, EVP_sha384(), NULL) != 1 || n != 48)
        return -EIO;
    return 0;
}
