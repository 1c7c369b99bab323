/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kmsd release policies (src/kmsd/policy.h) over the claims of real EAR tokens: each token is
 * issued by nt_ear_issue from the verdict of a simulated chip's report (Genoa VCEK, Turin VLEK),
 * with the launch configuration (measurement, host data, debug bit, VMPL) set per test, so the
 * claim names and value formats the policy reads are those attestd produces and cannot drift.
 * Covered: every rule passing and failing with its expected/found text; a claim removed from a
 * real token refused as "absent" for every rule; the defaults (min_status affirming, debug
 * refused) and their order; document order; normalisation (hex, UUID and name case) and the
 * normalised serialisation; every kind of parse error; the example in docs/; OOM while parsing.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../token/tt-util.h"
#include "config.h"
#include "core/alloc.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "kmsd/policy.h"
#include "token/ear.h"

static TtChip chips[] = {
    {"genoa", SNP_PRODUCT_GENOA, false, ""},
    {"turin-vlek", SNP_PRODUCT_TURIN, true, ""},
};
enum { GENOA, TURIN_VLEK };
static char tmpdir[] = "/tmp/nt-test-kms-policy-XXXXXX";
static NtSigningKeys *keys;

#define SIM_CSP_ID "CN=nitride-sim.invalid" /* the simulator's VLEK cspID (src/snp/sim.c) */
#define AE "ear.veraison.annotated-evidence"

static int setup(void **state) {
    char kd[PATH_MAX];
    if (!mkdtemp(tmpdir))
        return -1;
    for (size_t i = 0; i < ELEMENTSOF(chips); i++)
        if (tt_chip_init(&chips[i], tmpdir) < 0)
            return -1;
    snprintf(kd, sizeof kd, "%s/keys", tmpdir);
    return nt_signing_keys_open_dir(kd, NT_JWS_ES384, &keys, NULL) < 0 ? -1 : 0;
}

static int teardown(void **state) {
    char cmd[PATH_MAX + 16];
    nt_signing_keys_free(keys);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The launch configuration a test wants: measurement and host data filled with one byte (or
 * given in full), the DEBUG policy bit, the VMPL. */
typedef struct Launch {
    uint8_t m, h;
    const uint8_t *measurement; /* 48 bytes, overrides m */
    const uint8_t *host_data;   /* 32 bytes, overrides h */
    bool debug;
    uint32_t vmpl;
} Launch;
#define L0 ((Launch){.m = 0xab, .h = 0x22})

static void set_launch(int chip, const Launch *l) {
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    assert_int_equal(sim_chip_load(chips[chip].dir, &s), 0);
    SnpReport *r = sim_chip_launch(s);
    if (l->measurement)
        memcpy(r->measurement, l->measurement, 48);
    else
        memset(r->measurement, l->m, 48);
    if (l->host_data)
        memcpy(r->host_data, l->host_data, 32);
    else
        memset(r->host_data, l->h, 32);
    if (l->debug)
        r->policy |= SNP_POLICY_DEBUG;
    else
        r->policy &= ~SNP_POLICY_DEBUG;
    r->vmpl = l->vmpl;
    assert_int_equal(sim_chip_save(s), 0);
}

/* The claims of a real token for chip launched as l; appraisal: an appraisal policy for the
 * verdict (NULL: none); below: the TCB is below the recommended one (status warning). */
static json_t *claims_full(int chip, Launch l, const char *appraisal, bool below) {
    json_auto_t *rd = tt_runtime_data("n0nce", "P-384");
    _cleanup_(nt_verdict_freep) NtVerdict *v = NULL;
    _cleanup_free_ char *token = NULL;
    json_t *claims = NULL;

    set_launch(chip, &l);
    assert_int_equal(tt_verdict(&chips[chip], rd, appraisal, true, &v), 0);
    NtEarInput in = {.verdict = v,
                     .runtime_data = rd,
                     .policy_id = "default",
                     .issuer = "https://attestd.test",
                     .tcb_below_recommended = below};
    assert_int_equal(nt_ear_issue(keys, &in, &token, &claims), 0);
    return claims;
}

static json_t *claims_of(int chip, Launch l) {
    return claims_full(chip, l, NULL, false);
}

static json_t *evidence(json_t *claims) {
    return json_object_get(json_object_get(json_object_get(claims, "submods"), "cpu0"), AE);
}

/* n bytes of b as hex (2n chars); upper: in uppercase. Static buffers, rotated. */
static const char *hexfill(uint8_t b, size_t n, bool upper) {
    static char bufs[8][129];
    static unsigned k;
    char *s = bufs[k++ % 8];
    for (size_t i = 0; i < n; i++)
        snprintf(s + 2 * i, 3, upper ? "%02X" : "%02x", b);
    return s;
}

/* Parses {"version":1,"rules":{RULES}}; the test fails with the parser's message if refused. */
static KmsPolicy *pol(const char *fmt, ...) _printf_(1, 2);
static KmsPolicy *pol(const char *fmt, ...) {
    _cleanup_free_ char *rules = NULL, *doc = NULL;
    KmsPolicy *p = NULL;
    char err[256];
    va_list ap;
    va_start(ap, fmt);
    assert_true(vasprintf(&rules, fmt, ap) > 0);
    va_end(ap);
    assert_true(asprintf(&doc, "{\"version\":1,\"rules\":{%s}}", rules) > 0);
    int r = kms_policy_parse_text(doc, strlen(doc), &p, err);
    if (r != 0)
        fail_msg("policy %s refused (%d): %s", doc, r, err);
    assert_string_equal(err, "");
    return p;
}

static void allowed(const KmsPolicy *p, const json_t *claims, const char *vu) {
    KmsPolicyRefusal f = {};
    int r = kms_policy_eval(p, claims, vu, &f);
    if (r != 0)
        fail_msg("refused (%d): rule %s, expected '%s', found '%s'", r, f.rule, f.expected,
                 f.found);
}

static void refused(const KmsPolicy *p, const json_t *claims, const char *vu, const char *rule,
                    const char *expected, const char *found) {
    KmsPolicyRefusal f = {};
    int r = kms_policy_eval(p, claims, vu, &f);
    if (r != -EACCES)
        fail_msg("expected a refusal by %s, got %d", rule, r);
    if (!streq(f.rule, rule) || !streq(f.expected, expected) || !streq(f.found, found))
        fail_msg("refusal: rule '%s' expected '%s' found '%s'; wanted rule '%s' expected '%s' "
                 "found '%s'",
                 f.rule, f.expected, f.found, rule, expected, found);
}

/* SHA-256 of the chip's CHIP_ID, as lowercase hex. */
static void chip_id_sha256(int chip, char out[65]) {
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    uint8_t d[32];
    assert_int_equal(sim_chip_load(chips[chip].dir, &s), 0);
    SHA256(sim_chip_launch(s)->chip_id, sizeof sim_chip_launch(s)->chip_id, d);
    hex_encode(d, 32, out);
}

#define UUID_A "3f6b1a2e-9c4d-4e8b-a1f0-5d2c7e9b8a61"
#define UUID_A_UPPER "3F6B1A2E-9C4D-4E8B-A1F0-5D2C7E9B8A61"
#define UUID_B "0b4e44c6-4a3e-4fa9-8ac8-3c1c53a2d7a4"

/* Every rule at once, each satisfied, values written in the other case than the claims. */
static void test_all_rules_pass(void **state) {
    char cid[65];
    json_auto_t *g = claims_of(GENOA, L0);
    chip_id_sha256(GENOA, cid);
    for (char *c = cid; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    _cleanup_(kms_policy_freep) KmsPolicy *p =
        pol("\"measurement_in\":[\"%s\",\"%s\"],\"host_data_eq\":\"%s\","
            "\"min_tcb\":{\"bootloader\":10,\"tee\":0,\"snp\":23,\"microcode\":84},"
            "\"debug_allowed\":false,\"chip_id_sha256_in\":[\"%s\"],\"signing_key_in\":[\"vcek\"],"
            "\"min_status\":\"affirming\",\"product_in\":[\"GENOA\"],\"vmpl_in\":[0],"
            "\"volume_uuid_eq\":\"%s\"",
            hexfill(0x01, 48, false), hexfill(0xab, 48, true), hexfill(0x22, 32, true), cid,
            UUID_A_UPPER);
    allowed(p, g, UUID_A);
    allowed(p, g, UUID_A_UPPER);

    /* Turin VLEK: csp_id_in, fmc in min_tcb, a VMPL other than 0. */
    json_auto_t *t = claims_of(TURIN_VLEK, (Launch){.m = 0x33, .h = 0x44, .vmpl = 2});
    _cleanup_(kms_policy_freep) KmsPolicy *q =
        pol("\"csp_id_in\":[\"other\",\"%s\"],\"signing_key_in\":[\"VCEK\",\"VLEK\"],"
            "\"product_in\":[\"turin\"],\"min_tcb\":{\"fmc\":0,\"snp\":1},\"vmpl_in\":[2,3],"
            "\"measurement_in\":[\"%s\"]",
            SIM_CSP_ID, hexfill(0x33, 48, false));
    allowed(q, t, NULL); /* no volume_uuid_eq: the request's volume does not matter */
    allowed(q, t, "not-a-uuid");
}

/* Each rule failing on a real token: the refusal names it with expected and found. */
static void test_each_rule_fails(void **state) {
    json_auto_t *g = claims_of(GENOA, L0);
    char cid[65];
    chip_id_sha256(GENOA, cid);
    KmsPolicy *p;
    char expected[256];

    p = pol("\"measurement_in\":[\"%s\"]", hexfill(0x33, 48, true));
    snprintf(expected, sizeof expected, "one of [%s]", hexfill(0x33, 48, false));
    refused(p, g, NULL, "measurement_in", expected, hexfill(0xab, 48, false));
    kms_policy_free(p);

    p = pol("\"host_data_eq\":\"%s\"", hexfill(0x44, 32, false));
    refused(p, g, NULL, "host_data_eq", hexfill(0x44, 32, false), hexfill(0x22, 32, false));
    kms_policy_free(p);

    p = pol("\"min_tcb\":{\"microcode\":84,\"snp\":24}");
    refused(p, g, NULL, "min_tcb", "snp>=24 microcode>=84", "snp=23 microcode=84");
    kms_policy_free(p);
    /* fmc named: Genoa's TCB has none, so the rule refuses (never a silent pass). */
    p = pol("\"min_tcb\":{\"snp\":1,\"fmc\":0}");
    refused(p, g, NULL, "min_tcb", "snp>=1 fmc>=0", "snp=23 fmc=absent");
    kms_policy_free(p);

    p = pol("\"chip_id_sha256_in\":[\"%s\"]", hexfill(0, 32, false));
    snprintf(expected, sizeof expected, "one of [%s]", hexfill(0, 32, false));
    refused(p, g, NULL, "chip_id_sha256_in", expected, cid);
    kms_policy_free(p);

    p = pol("\"signing_key_in\":[\"VLEK\"]");
    refused(p, g, NULL, "signing_key_in", "one of [VLEK]", "VCEK");
    kms_policy_free(p);

    p = pol("\"csp_id_in\":[\"%s\"]", SIM_CSP_ID);
    refused(p, g, NULL, "csp_id_in", "one of [" SIM_CSP_ID "]", "absent"); /* VCEK: no csp_id */
    kms_policy_free(p);

    p = pol("\"product_in\":[\"turin\",\"milan\"]");
    refused(p, g, NULL, "product_in", "one of [Milan, Turin]", "Genoa");
    kms_policy_free(p);

    p = pol("\"volume_uuid_eq\":\"%s\"", UUID_A);
    refused(p, g, NULL, "volume_uuid_eq", UUID_A, "absent");
    refused(p, g, UUID_B, "volume_uuid_eq", UUID_A, UUID_B);
    refused(p, g, "{" UUID_A "}", "volume_uuid_eq", UUID_A,
            "invalid: '{" UUID_A "}' is not a UUID");
    refused(p, g, "bad\x01\xff", "volume_uuid_eq", UUID_A,
            "invalid: 'bad?"
            "?' is not a UUID");
    kms_policy_free(p);

    /* VMPL 2, debug, VLEK. */
    json_auto_t *v2 = claims_of(GENOA, (Launch){.m = 0xab, .h = 0x22, .vmpl = 2});
    p = pol("\"vmpl_in\":[1,0]");
    refused(p, v2, NULL, "vmpl_in", "one of [0, 1]", "2");
    allowed(p, g, NULL);
    kms_policy_free(p);

    json_auto_t *t = claims_of(TURIN_VLEK, L0);
    p = pol("\"csp_id_in\":[\"Some CSP\"]");
    refused(p, t, NULL, "csp_id_in", "one of [Some CSP]", SIM_CSP_ID);
    kms_policy_free(p);
    p = pol("\"signing_key_in\":[\"VCEK\"]");
    refused(p, t, NULL, "signing_key_in", "one of [VCEK]", "VLEK");
    kms_policy_free(p);
}

/* The two defaults, in force when the document omits them, and their order (first). */
static void test_defaults(void **state) {
    const char *m = hexfill(0xab, 48, false);
    /* A debug VM: attestd marks it warning (runtime-opaque 32). */
    json_auto_t *dbg = claims_of(GENOA, (Launch){.m = 0xab, .h = 0x22, .debug = true});
    json_auto_t *ok = claims_of(GENOA, L0);
    json_auto_t *warn = claims_full(GENOA, L0, NULL, true);
    KmsPolicy *p;

    assert_true(json_is_true(json_object_get(json_object_get(evidence(dbg), "policy"), "debug")));
    assert_true(json_is_false(json_object_get(json_object_get(evidence(ok), "policy"), "debug")));
    /* Nothing about status or debug: the implicit min_status refuses first. */
    p = pol("\"measurement_in\":[\"%s\"]", m);
    refused(p, dbg, NULL, "min_status", "affirming", "warning");
    refused(p, warn, NULL, "min_status", "affirming", "warning");
    allowed(p, ok, NULL);
    kms_policy_free(p);
    /* min_status warning: the implicit debug_allowed false refuses the debug VM. */
    p = pol("\"measurement_in\":[\"%s\"],\"min_status\":\"warning\"", m);
    refused(p, dbg, NULL, "debug_allowed", "debug off", "debug on");
    allowed(p, warn, NULL);
    allowed(p, ok, NULL);
    kms_policy_free(p);
    /* Said explicitly: the same. */
    p = pol("\"min_status\":\"warning\",\"debug_allowed\":false");
    refused(p, dbg, NULL, "debug_allowed", "debug off", "debug on");
    kms_policy_free(p);
    p = pol("\"min_status\":\"warning\",\"debug_allowed\":true");
    allowed(p, dbg, NULL);
    allowed(p, ok, NULL);
    kms_policy_free(p);

    /* contraindicated (the appraisal policy failed): refused even by min_status warning. */
    _cleanup_free_ char *appraisal = NULL;
    assert_true(asprintf(&appraisal, "{\"measurements\":[\"%s\"]}", hexfill(0x99, 48, false)) > 0);
    json_auto_t *bad = claims_full(GENOA, L0, appraisal, false);
    p = pol("\"min_status\":\"warning\"");
    refused(p, bad, NULL, "min_status", "warning or affirming", "contraindicated");
    kms_policy_free(p);
}

/* The first failing rule in document order is reported. */
static void test_document_order(void **state) {
    json_auto_t *g = claims_of(GENOA, L0);
    const char *x = hexfill(0x33, 48, false);
    char expected[256];
    KmsPolicy *p;

    snprintf(expected, sizeof expected, "one of [%s]", x);
    p = pol("\"vmpl_in\":[3],\"measurement_in\":[\"%s\"]", x);
    refused(p, g, NULL, "vmpl_in", "one of [3]", "0");
    kms_policy_free(p);
    p = pol("\"measurement_in\":[\"%s\"],\"vmpl_in\":[3]", x);
    refused(p, g, NULL, "measurement_in", expected, hexfill(0xab, 48, false));
    kms_policy_free(p);
    /* The serialisation keeps the order. */
    p = pol("\"vmpl_in\":[3],\"product_in\":[\"genoa\"],\"measurement_in\":[\"%s\"]", x);
    json_auto_t *j = kms_policy_to_json(p);
    const char *k;
    json_t *v;
    const char *want[] = {"vmpl_in", "product_in", "measurement_in"};
    size_t i = 0;
    json_object_foreach(json_object_get(j, "rules"), k, v) assert_string_equal(k, want[i++]);
    assert_int_equal(i, 3);
    kms_policy_free(p);
}

/* Each rule whose claim is removed from a real token refuses with found "absent". */
static void test_absent_claims(void **state) {
    json_auto_t *g = claims_of(GENOA, L0);
    json_auto_t *t = claims_of(TURIN_VLEK, L0);
    char tcid[65], expected[256];
    chip_id_sha256(TURIN_VLEK, tcid);
    const struct {
        const char *claim; /* member of the annotated evidence ("policy/debug": nested) */
        const char *rules; /* a policy the full token satisfies */
        const char *rule, *expected;
    } cases[] = {
        {"measurement", NULL, "measurement_in", NULL},
        {"host_data", NULL, "host_data_eq", NULL},
        {"reported_tcb", "\"min_tcb\":{\"snp\":1}", "min_tcb", "snp>=1"},
        {"policy/debug", "\"debug_allowed\":true", "debug_allowed", "debug on or off"},
        {"policy/debug", "\"debug_allowed\":false", "debug_allowed", "debug off"},
        {"policy", "\"vmpl_in\":[0]", "debug_allowed", "debug off"}, /* implicit rule too */
        {"chip_id_sha256", NULL, "chip_id_sha256_in", NULL},
        {"signing_key", "\"signing_key_in\":[\"VLEK\"]", "signing_key_in", "one of [VLEK]"},
        {"csp_id", "\"csp_id_in\":[\"" SIM_CSP_ID "\"]", "csp_id_in", "one of [" SIM_CSP_ID "]"},
        {"product", "\"product_in\":[\"Turin\"]", "product_in", "one of [Turin]"},
        {"vmpl", "\"vmpl_in\":[0]", "vmpl_in", "one of [0]"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_free_ char *rules = NULL;
        json_auto_t *c = json_deep_copy(t);
        json_t *ev = evidence(c);
        const char *slash = strchr(cases[i].claim, '/');
        if (slash)
            assert_int_equal(json_object_del(json_object_get(ev, "policy"), slash + 1), 0);
        else
            assert_int_equal(json_object_del(ev, cases[i].claim), 0);
        const char *exp = cases[i].expected;
        if (streq(cases[i].rule, "measurement_in")) {
            assert_true(asprintf(&rules, "\"measurement_in\":[\"%s\"]", hexfill(0xab, 48, 0)) > 0);
            snprintf(expected, sizeof expected, "one of [%s]", hexfill(0xab, 48, false));
            exp = expected;
        } else if (streq(cases[i].rule, "host_data_eq")) {
            assert_true(asprintf(&rules, "\"host_data_eq\":\"%s\"", hexfill(0x22, 32, 0)) > 0);
            exp = hexfill(0x22, 32, false);
        } else if (streq(cases[i].rule, "chip_id_sha256_in")) {
            assert_true(asprintf(&rules, "\"chip_id_sha256_in\":[\"%s\"]", tcid) > 0);
            snprintf(expected, sizeof expected, "one of [%s]", tcid);
            exp = expected;
        } else
            assert_non_null(rules = strdup(cases[i].rules));
        _cleanup_(kms_policy_freep) KmsPolicy *p = pol("%s", rules);
        allowed(p, t, NULL); /* the intact token passes: the removal is what refuses */
        refused(p, c, NULL, cases[i].rule, exp, "absent");
    }
    /* ear.status removed: the implicit min_status refuses. */
    {
        json_auto_t *c = json_deep_copy(g);
        assert_int_equal(
            json_object_del(json_object_get(json_object_get(c, "submods"), "cpu0"), "ear.status"),
            0);
        _cleanup_(kms_policy_freep) KmsPolicy *p = pol("\"vmpl_in\":[0]");
        allowed(p, g, NULL);
        refused(p, c, NULL, "min_status", "affirming", "absent");
    }
    /* The whole annotated evidence gone, or a claims object of another shape. */
    {
        json_auto_t *c = json_deep_copy(g);
        assert_int_equal(
            json_object_del(json_object_get(json_object_get(c, "submods"), "cpu0"), AE), 0);
        _cleanup_(kms_policy_freep) KmsPolicy *p = pol("\"min_tcb\":{\"tee\":0}");
        allowed(p, g, NULL);
        refused(p, c, NULL, "debug_allowed", "debug off", "absent");
        json_auto_t *empty = json_object();
        refused(p, empty, NULL, "min_status", "affirming", "absent");
    }
    /* Malformed claim values are refused as invalid, not compared. */
    {
        json_auto_t *c = json_deep_copy(g);
        json_t *ev = evidence(c);
        assert_int_equal(json_object_set_new(ev, "measurement", json_string("abc\n")), 0);
        assert_int_equal(json_object_set_new(ev, "vmpl", json_string("0")), 0);
        assert_int_equal(json_object_set_new(ev, "product", json_integer(1)), 0);
        assert_int_equal(
            json_object_set_new(json_object_get(ev, "reported_tcb"), "snp", json_integer(300)), 0);
        KmsPolicy *p = pol("\"measurement_in\":[\"%s\"]", hexfill(0xab, 48, 0));
        snprintf(expected, sizeof expected, "one of [%s]", hexfill(0xab, 48, false));
        refused(p, c, NULL, "measurement_in", expected, "invalid: 'abc?' is not 48 bytes of hex");
        kms_policy_free(p);
        p = pol("\"vmpl_in\":[0]");
        refused(p, c, NULL, "vmpl_in", "one of [0]", "invalid: not an integer");
        kms_policy_free(p);
        p = pol("\"product_in\":[\"Genoa\"]");
        refused(p, c, NULL, "product_in", "one of [Genoa]", "invalid: not a string");
        kms_policy_free(p);
        p = pol("\"min_tcb\":{\"snp\":1,\"tee\":0}");
        refused(p, c, NULL, "min_tcb", "tee>=0 snp>=1", "tee=0 snp=invalid");
        kms_policy_free(p);
    }
}

/* Lists too long to show are cut with a count; the found value is shown in full. */
static void test_long_expected(void **state) {
    json_auto_t *g = claims_of(GENOA, L0);
    _cleanup_free_ char *list = NULL;
    char expected[256];
    size_t n = 0;
    list = calloc(1, 40 * 100);
    assert_non_null(list);
    for (int i = 0; i < 40; i++)
        n += (size_t)sprintf(list + n, "%s\"%s\"", i ? "," : "", hexfill((uint8_t)i, 48, false));
    _cleanup_(kms_policy_freep) KmsPolicy *p = pol("\"measurement_in\":[%s]", list);
    snprintf(expected, sizeof expected, "one of [%s, %s, ... 38 more]", hexfill(0, 48, false),
             hexfill(1, 48, false));
    refused(p, g, NULL, "measurement_in", expected, hexfill(0xab, 48, false));
}

/* Every kind of parse error names the rule or member and the reason; nothing is returned. */
static void test_parse_errors(void **state) {
    const char *m = hexfill(0x11, 48, false), *h = hexfill(0x22, 32, false);
    const struct {
        const char *doc, *err;
    } cases[] = {
        /* document shape */
        {"", "not valid JSON"},
        {"[1]", "expected a JSON object"},
        {"{\"version\":1,\"rules\":{\"vmpl_in\":[0]},\"comment\":\"x\"}",
         "unknown member 'comment'"},
        {"{\"rules\":{\"vmpl_in\":[0]}}", "version: missing"},
        {"{\"version\":2,\"rules\":{\"vmpl_in\":[0]}}", "version: expected 1"},
        {"{\"version\":\"1\",\"rules\":{\"vmpl_in\":[0]}}", "version: expected 1"},
        {"{\"version\":1}", "rules: missing"},
        {"{\"version\":1,\"rules\":[]}", "rules: expected an object"},
        {"{\"version\":1,\"rules\":{}}", "rules: empty"},
        {"{\"version\":1,\"version\":1,\"rules\":{\"vmpl_in\":[0]}}", "duplicate"},
        {"{\"version\":1,\"rules\":{\"vmpl_in\":[0],\"vmpl_in\":[1]}}", "duplicate"},
        /* unknown rule or component */
        {"{\"version\":1,\"rules\":{\"measurment_in\":[]}}", "unknown rule 'measurment_in'"},
        {"{\"version\":1,\"rules\":{\"ear.status\":\"affirming\"}}", "unknown rule 'ear.status'"},
        {"{\"version\":1,\"rules\":{\"min_tcb\":{\"ucode\":1}}}",
         "min_tcb: unknown component 'ucode'"},
        /* wrong types */
        {"{\"version\":1,\"rules\":{\"measurement_in\":\"ab\"}}",
         "measurement_in: expected an array"},
        {"{\"version\":1,\"rules\":{\"host_data_eq\":[\"ab\"]}}",
         "host_data_eq: expected a string"},
        {"{\"version\":1,\"rules\":{\"min_tcb\":5}}", "min_tcb: expected an object"},
        {"{\"version\":1,\"rules\":{\"min_tcb\":{\"snp\":\"8\"}}}",
         "min_tcb.snp: expected an integer"},
        {"{\"version\":1,\"rules\":{\"min_tcb\":{\"snp\":256}}}",
         "min_tcb.snp: expected an integer 0..255"},
        {"{\"version\":1,\"rules\":{\"min_tcb\":{\"tee\":-1}}}",
         "min_tcb.tee: expected an integer 0..255"},
        {"{\"version\":1,\"rules\":{\"min_tcb\":{}}}", "min_tcb: must name at least one component"},
        {"{\"version\":1,\"rules\":{\"debug_allowed\":\"false\"}}",
         "debug_allowed: expected true or false"},
        {"{\"version\":1,\"rules\":{\"debug_allowed\":0}}",
         "debug_allowed: expected true or false"},
        {"{\"version\":1,\"rules\":{\"chip_id_sha256_in\":{}}}",
         "chip_id_sha256_in: expected an array"},
        {"{\"version\":1,\"rules\":{\"signing_key_in\":\"VCEK\"}}",
         "signing_key_in: expected an array"},
        {"{\"version\":1,\"rules\":{\"signing_key_in\":[1]}}",
         "signing_key_in[0]: expected a string"},
        {"{\"version\":1,\"rules\":{\"csp_id_in\":[1]}}", "csp_id_in[0]: expected a string"},
        {"{\"version\":1,\"rules\":{\"min_status\":1}}",
         "min_status: expected \"affirming\" or \"warning\""},
        {"{\"version\":1,\"rules\":{\"product_in\":[true]}}", "product_in[0]: expected a string"},
        {"{\"version\":1,\"rules\":{\"vmpl_in\":[\"0\"]}}", "vmpl_in[0]: expected an integer 0..3"},
        {"{\"version\":1,\"rules\":{\"volume_uuid_eq\":5}}", "volume_uuid_eq: expected a UUID"},
        /* empty lists */
        {"{\"version\":1,\"rules\":{\"measurement_in\":[]}}", "measurement_in: must not be empty"},
        {"{\"version\":1,\"rules\":{\"chip_id_sha256_in\":[]}}",
         "chip_id_sha256_in: must not be empty"},
        {"{\"version\":1,\"rules\":{\"signing_key_in\":[]}}", "signing_key_in: must not be empty"},
        {"{\"version\":1,\"rules\":{\"csp_id_in\":[]}}", "csp_id_in: must not be empty"},
        {"{\"version\":1,\"rules\":{\"product_in\":[]}}", "product_in: must not be empty"},
        {"{\"version\":1,\"rules\":{\"vmpl_in\":[]}}", "vmpl_in: must not be empty"},
        /* bad values */
        {"{\"version\":1,\"rules\":{\"measurement_in\":[\"abcd\"]}}",
         "measurement_in[0]: expected 96 hex characters (48 bytes)"},
        {"{\"version\":1,\"rules\":{\"host_data_eq\":\"zz\"}}",
         "host_data_eq: expected 64 hex characters (32 bytes)"},
        {"{\"version\":1,\"rules\":{\"chip_id_sha256_in\":[\"00\"]}}",
         "chip_id_sha256_in[0]: expected 64 hex characters (32 bytes)"},
        {"{\"version\":1,\"rules\":{\"min_status\":\"contraindicated\"}}",
         "min_status: \"contraindicated\" would"},
        {"{\"version\":1,\"rules\":{\"min_status\":\"Affirming\"}}", "min_status: expected"},
        {"{\"version\":1,\"rules\":{\"signing_key_in\":[\"ARK\"]}}",
         "signing_key_in[0]: unknown value 'ARK' (VCEK, VLEK)"},
        {"{\"version\":1,\"rules\":{\"product_in\":[\"Milan-B0\"]}}",
         "product_in[0]: unknown value 'Milan-B0' (Milan, Genoa, Turin)"},
        {"{\"version\":1,\"rules\":{\"vmpl_in\":[4]}}", "vmpl_in[0]: expected an integer 0..3"},
        {"{\"version\":1,\"rules\":{\"csp_id_in\":[\"\"]}}",
         "csp_id_in[0]: expected a string of 1..127"},
        {"{\"version\":1,\"rules\":{\"csp_id_in\":[\"a\\nb\"]}}",
         "csp_id_in[0]: expected a string of 1..127"},
        {"{\"version\":1,\"rules\":{\"volume_uuid_eq\":\"3f6b1a2e9c4d4e8ba1f05d2c7e9b8a61\"}}",
         "volume_uuid_eq: expected a UUID"},
        {"{\"version\":1,\"rules\":{\"volume_uuid_eq\":\"{3f6b1a2e-9c4d-4e8b-a1f0-5d2c7e9b8a61}\"}"
         "}",
         "volume_uuid_eq: expected a UUID"},
        {"{\"version\":1,\"rules\":{\"volume_uuid_eq\":\"3f6b1a2e-9c4d-4e8b-a1f0-5d2c7e9b8a6g\"}}",
         "volume_uuid_eq: expected a UUID"},
        /* duplicates inside lists (after normalisation) */
        {"{\"version\":1,\"rules\":{\"signing_key_in\":[\"VCEK\",\"vcek\"]}}",
         "signing_key_in[1]: duplicate 'VCEK'"},
        {"{\"version\":1,\"rules\":{\"product_in\":[\"milan\",\"MILAN\"]}}",
         "product_in[1]: duplicate 'Milan'"},
        {"{\"version\":1,\"rules\":{\"vmpl_in\":[0,1,0]}}", "vmpl_in[2]: duplicate 0"},
        {"{\"version\":1,\"rules\":{\"csp_id_in\":[\"a\",\"b\",\"a\"]}}",
         "csp_id_in[2]: duplicate of csp_id_in[0]"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        KmsPolicy *p = (KmsPolicy *)0x1;
        char err[256];
        memset(err, 'x', sizeof err);
        int r = kms_policy_parse_text(cases[i].doc, strlen(cases[i].doc), &p, err);
        if (r != -EBADMSG || !strstr(err, cases[i].err))
            fail_msg("%s: got %d '%s', wanted -EBADMSG '%s'", cases[i].doc, r, err, cases[i].err);
        assert_ptr_equal(p, (KmsPolicy *)0x1); /* written only on success */
    }

    /* Composed ones: hex of one byte too many or a non-hex character, duplicates across case. */
    char *rules[5] = {};
    assert_true(asprintf(&rules[0], "\"measurement_in\":[\"%s\",\"%s00\"]", m, m) > 0);
    assert_true(
        asprintf(&rules[1], "\"measurement_in\":[\"%s\",\"%s\"]", m, hexfill(0x11, 48, true)) > 0);
    assert_true(asprintf(&rules[2], "\"chip_id_sha256_in\":[\"%s\",\"%s\"]", h, h) > 0);
    assert_true(asprintf(&rules[3], "\"host_data_eq\":\"%s\"", h) > 0);
    assert_true(asprintf(&rules[4], "\"host_data_eq\":\"%.63sg\"", h) > 0);
    const char *const composed_err[5] = {
        "measurement_in[1]: expected 96 hex characters (48 bytes), got another length",
        "measurement_in[1]: duplicate of measurement_in[0]",
        "chip_id_sha256_in[1]: duplicate of chip_id_sha256_in[0]",
        NULL, /* the control: the same shape, valid */
        "host_data_eq: expected 64 hex characters (32 bytes), got a non-hex character",
    };
    for (size_t i = 0; i < ELEMENTSOF(rules); i++) {
        _cleanup_free_ char *doc = NULL;
        KmsPolicy *p = NULL;
        char err[256];
        assert_true(asprintf(&doc, "{\"version\":1,\"rules\":{%s}}", rules[i]) > 0);
        free(rules[i]);
        int r = kms_policy_parse_text(doc, strlen(doc), &p, err);
        if (!composed_err[i]) {
            assert_int_equal(r, 0);
            kms_policy_free(p);
            continue;
        }
        if (r != -EBADMSG || !strstr(err, composed_err[i]))
            fail_msg("%s: got %d '%s', wanted '%s'", doc, r, err, composed_err[i]);
    }

    /* Too large a text; NUL inside a string built in memory; bad arguments. */
    {
        size_t n = KMS_POLICY_TEXT_MAX + 1;
        _cleanup_free_ char *big = malloc(n);
        KmsPolicy *p = NULL;
        char err[256];
        assert_non_null(big);
        memset(big, ' ', n);
        assert_int_equal(kms_policy_parse_text(big, n, &p, err), -EBADMSG);
        assert_non_null(strstr(err, "larger than"));
        json_auto_t *doc = NULL;
        doc = json_pack("{s:i,s:{s:[o]}}", "version", 1, "rules", "csp_id_in",
                        json_stringn("a\0b", 3));
        assert_int_equal(kms_policy_parse(doc, &p, err), -EBADMSG);
        assert_non_null(strstr(err, "csp_id_in[0]"));
        assert_int_equal(kms_policy_parse(NULL, &p, err), -EINVAL);
        assert_int_equal(kms_policy_parse(doc, NULL, err), -EINVAL);
    }
}

/* Values normalised: the serialisation is canonical and parses to the same policy. */
static void test_normalise(void **state) {
    _cleanup_(kms_policy_freep) KmsPolicy *p = pol(
        "\"volume_uuid_eq\":\"%s\",\"product_in\":[\"TURIN\",\"milan\"],"
        "\"signing_key_in\":[\"vlek\"],\"min_tcb\":{\"fmc\":1,\"bootloader\":2},"
        "\"vmpl_in\":[3,0],\"host_data_eq\":\"%s\",\"measurement_in\":[\"%s\"],"
        "\"chip_id_sha256_in\":[\"%s\"],\"csp_id_in\":[\"Cloud A\"],\"min_status\":\"warning\","
        "\"debug_allowed\":true",
        UUID_A_UPPER, hexfill(0xcd, 32, true), hexfill(0xef, 48, true), hexfill(0x0a, 32, true));
    json_auto_t *j = kms_policy_to_json(p);
    _cleanup_free_ char *want = NULL, *got = json_dumps(j, JSON_COMPACT);
    assert_true(asprintf(&want,
                         "{\"version\":1,\"rules\":{\"volume_uuid_eq\":\"%s\",\"product_in\":"
                         "[\"Milan\",\"Turin\"],\"signing_key_in\":[\"VLEK\"],\"min_tcb\":"
                         "{\"bootloader\":2,\"fmc\":1},\"vmpl_in\":[0,3],\"host_data_eq\":\"%s\","
                         "\"measurement_in\":[\"%s\"],\"chip_id_sha256_in\":[\"%s\"],"
                         "\"csp_id_in\":[\"Cloud A\"],\"min_status\":\"warning\","
                         "\"debug_allowed\":true}}",
                         UUID_A, hexfill(0xcd, 32, false), hexfill(0xef, 48, false),
                         hexfill(0x0a, 32, false)) > 0);
    assert_string_equal(got, want);
    KmsPolicy *q = NULL;
    char err[256];
    assert_int_equal(kms_policy_parse(j, &q, err), 0);
    json_auto_t *j2 = kms_policy_to_json(q);
    assert_true(json_equal(j, j2));
    kms_policy_free(q);
    /* Defaults are not written out. */
    _cleanup_(kms_policy_freep) KmsPolicy *d = pol("\"vmpl_in\":[0]");
    json_auto_t *jd = kms_policy_to_json(d);
    _cleanup_free_ char *sd = json_dumps(jd, JSON_COMPACT);
    assert_string_equal(sd, "{\"version\":1,\"rules\":{\"vmpl_in\":[0]}}");
}

/* docs/kms-policy-example.json parses, and releases to the VM it describes and no other. */
static void test_example(void **state) {
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    KmsPolicy *p = NULL;
    char err[256];
    uint8_t m[48], h[32];

    assert_int_equal(read_full_file(NT_SOURCE_ROOT "/docs/kms-policy-example.json", 65536,
                                    (uint8_t **)&text, &len),
                     0);
    if (kms_policy_parse_text(text, len, &p, err) != 0)
        fail_msg("docs/kms-policy-example.json: %s", err);
    json_auto_t *doc = json_loadb(text, len, 0, NULL);
    json_t *rules = json_object_get(doc, "rules");
    const char *mh = json_string_value(json_array_get(json_object_get(rules, "measurement_in"), 0));
    const char *hh = json_string_value(json_object_get(rules, "host_data_eq"));
    const char *vu = json_string_value(json_object_get(rules, "volume_uuid_eq"));
    assert_non_null(vu);
    assert_int_equal(hex_decode_exact(mh, m, 48), 0);
    assert_int_equal(hex_decode_exact(hh, h, 32), 0);

    json_auto_t *good = claims_of(GENOA, (Launch){.measurement = m, .host_data = h});
    allowed(p, good, vu);
    refused(p, good, UUID_B, "volume_uuid_eq", vu, UUID_B);
    json_auto_t *other = claims_of(GENOA, (Launch){.m = 0x5f, .host_data = h});
    char expected[256];
    snprintf(expected, sizeof expected, "one of [%s]", mh);
    refused(p, other, vu, "measurement_in", expected, hexfill(0x5f, 48, false));
    json_auto_t *t = claims_of(TURIN_VLEK, (Launch){.measurement = m, .host_data = h});
    refused(p, t, vu, "product_in", "one of [Genoa]", "Turin");
    /* The normalised form of the example is the example (it is written canonically). */
    json_auto_t *j = kms_policy_to_json(p);
    assert_true(json_equal(j, doc));
    kms_policy_free(p);
}

static void test_eval_args(void **state) {
    _cleanup_(kms_policy_freep) KmsPolicy *p = pol("\"vmpl_in\":[0]");
    KmsPolicyRefusal f;
    json_auto_t *arr = json_array(), *obj = json_object();
    memset(&f, 0x5a, sizeof f);
    assert_int_equal(kms_policy_eval(NULL, obj, NULL, &f), -EINVAL);
    assert_int_equal(kms_policy_eval(p, NULL, NULL, &f), -EINVAL);
    assert_int_equal(kms_policy_eval(p, arr, NULL, &f), -EINVAL);
    assert_int_equal(kms_policy_eval(p, obj, NULL, NULL), -EINVAL);
    assert_int_equal((uint8_t)f.rule[0], 0x5a); /* untouched */
    assert_null(kms_policy_free(NULL));
}

/* Every allocation of a parse failing in turn: -ENOMEM, no leak (ASan), then success. */
static void test_oom(void **state) {
    _cleanup_free_ char *doc = NULL;
    assert_true(asprintf(&doc,
                         "{\"version\":1,\"rules\":{\"measurement_in\":[\"%s\"],\"csp_id_in\":"
                         "[\"a\",\"b\"],\"host_data_eq\":\"%s\",\"chip_id_sha256_in\":[\"%s\"]}}",
                         hexfill(1, 48, false), hexfill(2, 32, false), hexfill(3, 32, false)) > 0);
    for (long n = 0;; n++) {
        KmsPolicy *p = NULL;
        char err[256];
        nt_alloc_fail_after(n);
        int r = kms_policy_parse_text(doc, strlen(doc), &p, err);
        nt_alloc_fail_after(-1);
        if (r == 0) {
            assert_true(n >= 5);
            kms_policy_free(p);
            break;
        }
        if (r != -ENOMEM)
            fail_msg("allocation %ld failing: %d %s", n, r, err);
        assert_null(p);
        assert_true(n < 100);
    }
    /* Evaluation: an allocation failing is -ENOMEM, never an allowed or a refused verdict. */
    json_auto_t *g = claims_of(GENOA, L0);
    _cleanup_(kms_policy_freep) KmsPolicy *p =
        pol("\"measurement_in\":[\"%s\"],\"host_data_eq\":\"%s\"", hexfill(0xab, 48, false),
            hexfill(0x22, 32, false));
    for (long n = 0;; n++) {
        KmsPolicyRefusal f = {};
        nt_alloc_fail_after(n);
        int r = kms_policy_eval(p, g, NULL, &f);
        nt_alloc_fail_after(-1);
        if (r == 0) {
            assert_true(n >= 2); /* one per hex claim decoded */
            break;
        }
        assert_int_equal(r, -ENOMEM);
        assert_string_equal(f.rule, "");
        assert_true(n < 100);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_rules_pass),
        cmocka_unit_test(test_each_rule_fails),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_document_order),
        cmocka_unit_test(test_absent_claims),
        cmocka_unit_test(test_long_expected),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_normalise),
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_eval_args),
        cmocka_unit_test(test_oom),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
