/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for kmsd release policies (kms_policy_parse_text: a policy an admin sends to kmsd;
 * kms_policy_eval: over the claims of a token, whose shape kmsd does not control beyond the
 * signature, and the volume UUID the agent declares). Input: POLICY "\n%%\n" CLAIMS "\n%%\n"
 * VOLUME_UUID, the last two optional (a fixed, realistic claims object when CLAIMS is absent or
 * not JSON). Contract checked: a parse failure is -EBADMSG or -ENOMEM with a message and writes
 * no policy; an accepted policy serialises, and the serialisation parses to a policy that
 * serialises the same and evaluates the same; evaluation returns 0, -EACCES with a known rule
 * and non-empty expected/found, -ENOMEM, or -EINVAL exactly when the claims are not an object.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmsd/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEP "\n%%\n"

static const char default_claims[] =
    "{\"eat_profile\":\"tag:github.com,2023:veraison/ear\",\"iat\":1900000000,"
    "\"exp\":1900000300,\"iss\":\"https://attestd.test\",\"jti\":\"AAAAAAAAAAAAAAAAAAAAAA\","
    "\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\",\"ear.trustworthiness-vector\":"
    "{\"instance-identity\":2,\"hardware\":2,\"runtime-opaque\":2},"
    "\"ear.veraison.annotated-evidence\":{\"product\":\"Genoa\",\"signing_key\":\"VCEK\","
    "\"measurement\":\"abababababababababababababababababababababababababababababababababababab"
    "abababababababababababab\",\"host_data\":"
    "\"2222222222222222222222222222222222222222222222222222222222222222\",\"policy\":"
    "{\"value\":\"0x30000\",\"debug\":false,\"migrate_ma\":false,\"smt\":true,"
    "\"single_socket\":false,\"abi\":\"0.0\"},\"vmpl\":0,\"guest_svn\":0,\"reported_tcb\":"
    "{\"bootloader\":10,\"tee\":0,\"snp\":23,\"microcode\":84},\"chip_id_sha256\":"
    "\"0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a\","
    "\"report_version\":3}}},\"cnf\":{\"jwk\":{\"kty\":\"EC\",\"crv\":\"P-384\"}}}";

static const char *const rules[] = {
    "measurement_in",    "host_data_eq",   "min_tcb",        "debug_allowed",
    "chip_id_sha256_in", "signing_key_in", "csp_id_in",      "min_status",
    "product_in",        "vmpl_in",        "volume_uuid_eq",
};

static bool known_rule(const char *r) {
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (strcmp(r, rules[i]) == 0)
            return true;
    return false;
}

static bool bounded_nonempty(const char *s, size_t size) {
    size_t n = strnlen(s, size);
    return n > 0 && n < size;
}

static int eval(const KmsPolicy *p, const json_t *claims, const char *vu, KmsPolicyRefusal *f) {
    int r = kms_policy_eval(p, claims, vu, f);
    if (r == -EINVAL) {
        if (json_is_object(claims))
            abort();
    } else if (r == -EACCES) {
        if (!known_rule(f->rule) || !bounded_nonempty(f->expected, sizeof f->expected) ||
            !bounded_nonempty(f->found, sizeof f->found))
            abort();
    } else if (r != 0 && r != -ENOMEM)
        abort();
    return r;
}

static const uint8_t *find(const uint8_t *p, size_t n, const char *needle) {
    size_t l = strlen(needle);
    for (size_t i = 0; n >= l && i <= n - l; i++)
        if (memcmp(p + i, needle, l) == 0)
            return p + i;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    KmsPolicy *p = (KmsPolicy *)0x1, *q = NULL;
    KmsPolicyRefusal f1 = {}, f2 = {};
    json_t *claims = NULL, *j1 = NULL, *j2 = NULL;
    char err[256], *vu = NULL;
    size_t plen = size;
    int r;

    if (size > 512 * 1024)
        return 0;
    const uint8_t *s1 = find(data, size, SEP);
    if (s1) {
        const uint8_t *c = s1 + strlen(SEP);
        size_t rest = size - (size_t)(c - data);
        const uint8_t *s2 = find(c, rest, SEP);
        size_t clen = s2 ? (size_t)(s2 - c) : rest;
        plen = (size_t)(s1 - data);
        claims = json_loadb((const char *)c, clen, JSON_REJECT_DUPLICATES, NULL);
        if (s2) {
            const uint8_t *v = s2 + strlen(SEP);
            vu = strndup((const char *)v, size - (size_t)(v - data));
            if (!vu)
                goto out;
        }
    }
    if (!claims)
        claims = json_loads(default_claims, 0, NULL);
    if (!claims)
        abort();

    memset(err, 'x', sizeof err);
    r = kms_policy_parse_text((const char *)data, plen, &p, err);
    if (r < 0) {
        if (p != (KmsPolicy *)0x1)
            abort(); /* written on failure */
        if (r != -EBADMSG && r != -ENOMEM)
            abort();
        if (r == -EBADMSG && !bounded_nonempty(err, sizeof err))
            abort(); /* every rejection names its reason */
        goto out;
    }
    if (!p || err[0])
        abort();

    /* The normalised form is a fixed point and means the same. */
    j1 = kms_policy_to_json(p);
    if (!j1)
        goto out;
    r = kms_policy_parse(j1, &q, err);
    if (r == -ENOMEM)
        goto out;
    if (r < 0)
        abort();
    j2 = kms_policy_to_json(q);
    if (j2 && !json_equal(j1, j2))
        abort();

    int e1 = eval(p, claims, vu, &f1), e2 = eval(q, claims, vu, &f2);
    if (e1 != -ENOMEM && e2 != -ENOMEM &&
        (e1 != e2 || (e1 == -EACCES && memcmp(&f1, &f2, sizeof f1) != 0)))
        abort();
    /* The same policy over other shapes of claims and without a volume. */
    (void)eval(p, json_object_get(claims, "submods"), NULL, &f1);
    {
        json_t *arr = json_array();
        if (arr)
            (void)eval(p, arr, vu, &f1);
        json_decref(arr);
    }
out:
    json_decref(j1);
    json_decref(j2);
    json_decref(claims);
    kms_policy_free(q);
    if (p != (KmsPolicy *)0x1)
        kms_policy_free(p);
    free(vu);
    return 0;
}
