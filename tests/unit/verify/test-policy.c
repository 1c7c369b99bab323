/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The appraisal policy: every field parses, every malformed field is refused with an error that
 * names the key, defaults are the safe ones, and each check passes and fails on a synthetic
 * report (the appraisal does not look at signatures: verify.c only calls it for authentic
 * reports).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "verify/policy.h"

#define H48(c)                                                                                     \
    c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c
#define M_A H48("a1")
#define M_B H48("b2")
#define Z16 "0000000000000000"
#define HOST0 Z16 Z16 Z16 Z16
#define HOST1 "1" Z16 Z16 Z16 "000000000000000"
#define RD_A M_A Z16 Z16

static NtPolicy *parse_ok(const char *text) {
    NtPolicy *p = NULL;
    char *err = NULL;
    int r = nt_policy_parse(text, strlen(text), &p, &err);
    if (r < 0)
        fail_msg("policy %s: %s", text, err ? err : "?");
    assert_null(err);
    return p;
}

static void test_parse_fields(void **state) {
    static const char full[] =
        "{\"measurements\":[\"" M_A "\",\"" M_B "\"],"
        "\"host_data\":[\"" HOST0 "\"],"
        "\"id_key_digests\":[\"" M_A "\"],\"author_key_digests\":[\"" M_B "\"],"
        "\"report_data\":\"" RD_A "\","
        "\"min_tcb\":{\"bootloader\":1,\"tee\":2,\"snp\":3,\"microcode\":4,\"fmc\":5},"
        "\"min_guest_svn\":7,\"vmpls\":[0,2],\"allow_debug\":true,\"allow_migrate_ma\":true,"
        "\"allow_smt\":false,\"require_single_socket\":true,\"min_abi\":\"1.51\","
        "\"min_firmware\":\"1.55\",\"min_report_version\":3,\"chip_id_masked\":\"require\","
        "\"signing_keys\":[\"vlek\"],\"products\":[\"Genoa\",\"turin\"]}";
    _cleanup_(nt_policy_freep) NtPolicy *p = parse_ok(full);
    assert_int_equal(p->measurements.n, 2);
    assert_int_equal(p->measurements.item_len, 48);
    assert_int_equal(p->measurements.items[48], 0xb2);
    assert_int_equal(p->host_data.n, 1);
    assert_int_equal(p->host_data.item_len, 32);
    assert_int_equal(p->id_key_digests.n, 1);
    assert_int_equal(p->author_key_digests.n, 1);
    assert_true(p->has_report_data);
    assert_int_equal(p->report_data[0], 0xa1);
    assert_int_equal(p->report_data[63], 0);
    assert_int_equal(p->min_tcb_set,
                     NT_TCB_BOOTLOADER | NT_TCB_TEE | NT_TCB_SNP | NT_TCB_MICROCODE | NT_TCB_FMC);
    assert_int_equal(p->min_tcb.bootloader, 1);
    assert_int_equal(p->min_tcb.tee, 2);
    assert_int_equal(p->min_tcb.snp, 3);
    assert_int_equal(p->min_tcb.microcode, 4);
    assert_int_equal(p->min_tcb.fmc, 5);
    assert_true(p->has_min_guest_svn);
    assert_int_equal(p->min_guest_svn, 7);
    assert_int_equal(p->vmpls, 0x5);
    assert_true(p->allow_debug && p->allow_migrate_ma && !p->allow_smt);
    assert_true(p->require_single_socket);
    assert_true(p->has_min_abi);
    assert_int_equal(p->min_abi_major, 1);
    assert_int_equal(p->min_abi_minor, 51);
    assert_true(p->has_min_firmware);
    assert_int_equal(p->min_fw_minor, 55);
    assert_int_equal(p->min_report_version, 3);
    assert_int_equal(p->chip_id_masked, NT_CHIP_ID_MASKED_REQUIRE);
    assert_int_equal(p->signing_keys, 1u << NT_CERT_ROLE_VLEK);
    assert_int_equal(p->products, (1u << SNP_PRODUCT_GENOA) | (1u << SNP_PRODUCT_TURIN));
}

static void test_defaults(void **state) {
    _cleanup_(nt_policy_freep) NtPolicy *p = parse_ok("{}");
    assert_false(p->allow_debug);
    assert_false(p->allow_migrate_ma);
    assert_true(p->allow_smt);
    assert_false(p->require_single_socket);
    assert_int_equal(p->chip_id_masked, NT_CHIP_ID_MASKED_FORBID);
    assert_int_equal(p->signing_keys, (1u << NT_CERT_ROLE_VCEK) | (1u << NT_CERT_ROLE_VLEK));
    assert_int_equal(p->products, 7);
    assert_int_equal(p->measurements.n, 0);
    assert_int_equal(p->min_tcb_set, 0);
    assert_int_equal(p->vmpls, 0);
}

static void test_errors(void **state) {
    static const struct {
        const char *json, *msg;
    } cases[] = {
        {"", "not valid JSON"},
        {"[]", "JSON object"},
        {"{\"a\":1,\"a\":2}", "not valid JSON"},
        {"{\"measurement\":[]}", "unknown key 'measurement'"},
        {"{\"measurements\":\"" M_A "\"}", "measurements: expected an array"},
        {"{\"measurements\":[]}", "measurements: must not be empty"},
        {"{\"measurements\":[\"" M_A "\",\"zz\"]}", "measurements[1]: expected 96 hex"},
        {"{\"measurements\":[\"" M_A "00\"]}", "measurements[0]: expected 96 hex"},
        {"{\"measurements\":[5]}", "measurements[0]: expected a string"},
        {"{\"host_data\":[\"" M_A "\"]}", "host_data[0]: expected 64 hex"},
        {"{\"id_key_digests\":[\"g" M_A "\"]}", "id_key_digests[0]: expected 96 hex"},
        {"{\"author_key_digests\":{}}", "author_key_digests: expected an array"},
        {"{\"report_data\":\"" M_A "\"}", "report_data: expected 128 hex"},
        {"{\"report_data\":[]}", "report_data: expected a string"},
        {"{\"min_tcb\":5}", "min_tcb: expected an object"},
        {"{\"min_tcb\":{}}", "min_tcb: must name at least one"},
        {"{\"min_tcb\":{\"ucode\":1}}", "min_tcb: unknown key 'ucode'"},
        {"{\"min_tcb\":{\"snp\":256}}", "min_tcb.snp: expected an integer 0..255"},
        {"{\"min_tcb\":{\"snp\":-1}}", "min_tcb.snp: expected an integer"},
        {"{\"min_tcb\":{\"tee\":\"1\"}}", "min_tcb.tee: expected an integer"},
        {"{\"min_tcb\":{\"fmc\":1.5}}", "min_tcb.fmc: expected an integer"},
        {"{\"min_guest_svn\":4294967296}", "min_guest_svn: expected an integer"},
        {"{\"min_guest_svn\":true}", "min_guest_svn: expected an integer"},
        {"{\"vmpls\":[4]}", "vmpls[0]: expected an integer 0..3"},
        {"{\"vmpls\":[]}", "vmpls: expected a non-empty array"},
        {"{\"vmpls\":0}", "vmpls: expected a non-empty array"},
        {"{\"allow_debug\":1}", "allow_debug: expected true or false"},
        {"{\"allow_migrate_ma\":\"no\"}", "allow_migrate_ma: expected true or false"},
        {"{\"allow_smt\":null}", "allow_smt: expected true or false"},
        {"{\"require_single_socket\":0}", "require_single_socket: expected true or false"},
        {"{\"min_abi\":\"1\"}", "min_abi: expected a string \"MAJOR.MINOR\""},
        {"{\"min_abi\":\"1.256\"}", "min_abi: expected"},
        {"{\"min_abi\":\"1.5x\"}", "min_abi: expected"},
        {"{\"min_abi\":1.5}", "min_abi: expected"},
        {"{\"min_firmware\":\" 1.5\"}", "min_firmware: expected"},
        {"{\"min_report_version\":\"3\"}", "min_report_version: expected an integer"},
        {"{\"chip_id_masked\":true}", "chip_id_masked: expected"},
        {"{\"chip_id_masked\":\"maybe\"}", "chip_id_masked: expected"},
        {"{\"signing_keys\":[\"VCEK\"]}", "signing_keys[0]: unknown signing key 'VCEK'"},
        {"{\"signing_keys\":[]}", "signing_keys: expected a non-empty array"},
        {"{\"signing_keys\":[1]}", "signing_keys[0]: expected a string"},
        {"{\"products\":[\"Milan-B0\"]}", "products[0]: unknown product 'Milan-B0'"},
        {"{\"products\":\"milan\"}", "products: expected a non-empty array"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        NtPolicy *p = (NtPolicy *)0x1;
        char *err = NULL;
        int r = nt_policy_parse(cases[i].json, strlen(cases[i].json), &p, &err);
        if (r != -EBADMSG || !err || !strstr(err, cases[i].msg))
            fail_msg("case %zu (%s): r=%d err=%s, wanted '%s'", i, cases[i].json, r,
                     err ? err : "(null)", cases[i].msg);
        assert_ptr_equal(p, (NtPolicy *)0x1); /* not written on failure */
        free(err);
    }
    NtPolicy *p = NULL;
    char *err = NULL;
    assert_int_equal(nt_policy_load("/nonexistent/policy.json", &p, &err), -ENOENT);
    assert_non_null(err);
    free(err);
}

static SnpReport base_report(void) {
    SnpReport r = {0};
    r.version = 3;
    r.guest_svn = 5;
    r.policy = SNP_POLICY_RESERVED_1 | SNP_POLICY_SMT | (1u << 8) | 51;
    r.vmpl = 0;
    r.signature_algo = 1;
    memset(r.measurement, 0xa1, 48);
    memset(r.id_key_digest, 0xa1, 48);
    memset(r.author_key_digest, 0xb2, 48);
    memset(r.report_data, 0xa1, 32);
    SnpTcb t = {.bootloader = 3, .tee = 0, .snp = 8, .microcode = 115};
    r.reported_tcb = snp_tcb_encode(&t, SNP_PRODUCT_MILAN);
    r.current_major = 1;
    r.current_minor = 55;
    return r;
}

static const char *apply(const char *json, const SnpReport *r, SnpProduct product, NtCertRole role,
                         NtVerdictStatus *ret_status) {
    static char name[64];
    _cleanup_(nt_policy_freep) NtPolicy *p = parse_ok(json);
    _cleanup_(nt_verdict_freep) NtVerdict *v = nt_verdict_new();
    assert_non_null(v);
    nt_policy_apply(p, r, product, role, v);
    *ret_status = nt_verdict_status(v);
    const NtCheck *c = nt_verdict_first_failure(v);
    snprintf(name, sizeof name, "%s", c ? c->name : "");
    return name;
}

static void test_apply(void **state) {
    static const struct {
        const char *json, *fails; /* "" = passes */
    } cases[] = {
        {"{}", ""},
        {"{\"measurements\":[\"" M_B "\",\"" M_A "\"]}", ""},
        {"{\"measurements\":[\"" M_B "\"]}", "measurement"},
        {"{\"host_data\":[\"" HOST0 "\"]}", ""},
        {"{\"host_data\":[\"" HOST1 "\"]}", "host_data"},
        {"{\"id_key_digests\":[\"" M_A "\"]}", ""},
        {"{\"id_key_digests\":[\"" M_B "\"]}", "id_key_digest"},
        {"{\"author_key_digests\":[\"" M_B "\"]}", ""},
        {"{\"author_key_digests\":[\"" M_A "\"]}", "author_key_digest"},
        {"{\"report_data\":\"" RD_A "\"}", "report_data"},
        {"{\"min_tcb\":{\"bootloader\":3,\"snp\":8,\"microcode\":115}}", ""},
        {"{\"min_tcb\":{\"snp\":9,\"microcode\":1}}", "min_tcb"},
        {"{\"min_tcb\":{\"microcode\":116}}", "min_tcb"},
        {"{\"min_tcb\":{\"tee\":1}}", "min_tcb"},
        {"{\"min_tcb\":{\"fmc\":9}}", "min_tcb"},    /* only fmc: checks nothing here */
        {"{\"min_tcb\":{\"fmc\":9,\"snp\":8}}", ""}, /* Milan has no FMC; snp counts */
        {"{\"min_tcb\":{\"fmc\":0,\"snp\":9}}", "min_tcb"},
        {"{\"min_guest_svn\":5}", ""},
        {"{\"min_guest_svn\":6}", "min_guest_svn"},
        {"{\"vmpls\":[0]}", ""},
        {"{\"vmpls\":[1,2,3]}", "vmpl"},
        {"{\"min_abi\":\"1.51\"}", ""},
        {"{\"min_abi\":\"0.99\"}", ""},
        {"{\"min_abi\":\"1.52\"}", "min_abi"},
        {"{\"min_abi\":\"2.0\"}", "min_abi"},
        {"{\"min_firmware\":\"1.55\"}", ""},
        {"{\"min_firmware\":\"1.56\"}", "min_firmware"},
        {"{\"min_report_version\":3}", ""},
        {"{\"min_report_version\":5}", "min_report_version"},
        {"{\"allow_smt\":false}", "smt"},
        {"{\"require_single_socket\":true}", "single_socket"},
        {"{\"chip_id_masked\":\"require\"}", "chip_id_masked"},
        {"{\"chip_id_masked\":\"allow\"}", ""},
        {"{\"signing_keys\":[\"vlek\"]}", "allowed_signing_key"},
        {"{\"signing_keys\":[\"vcek\"]}", ""},
        {"{\"products\":[\"genoa\",\"turin\"]}", "allowed_product"},
        {"{\"products\":[\"milan\"]}", ""},
    };
    SnpReport r = base_report();
    /* report_data: 32 bytes a1 then zeros; RD_A is 48 bytes a1 then zeros. */
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        NtVerdictStatus st;
        const char *got = apply(cases[i].json, &r, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st);
        if (!streq(got, cases[i].fails) ||
            st != (cases[i].fails[0] ? NT_VERDICT_POLICY : NT_VERDICT_OK))
            fail_msg("case %zu (%s): failed '%s', wanted '%s'", i, cases[i].json, got,
                     cases[i].fails);
    }

    /* report_data exact match. */
    char rd[129], js[200];
    hex_encode(r.report_data, 64, rd);
    snprintf(js, sizeof js, "{\"report_data\":\"%s\"}", rd);
    NtVerdictStatus st;
    assert_string_equal(apply(js, &r, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st), "");

    /* Policy bits. */
    SnpReport d = r;
    d.policy |= SNP_POLICY_DEBUG;
    assert_string_equal(apply("{}", &d, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st), "debug");
    assert_string_equal(
        apply("{\"allow_debug\":true}", &d, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st), "");
    d = r;
    d.policy |= SNP_POLICY_MIGRATE_MA;
    assert_string_equal(apply("{}", &d, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st), "migrate_ma");
    assert_string_equal(
        apply("{\"allow_migrate_ma\":true}", &d, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st), "");
    d = r;
    d.policy |= SNP_POLICY_SINGLE_SOCKET;
    assert_string_equal(
        apply("{\"require_single_socket\":true}", &d, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st),
        "");
    d = r;
    d.flags |= SNP_FLAG_MASK_CHIP_KEY;
    assert_string_equal(apply("{}", &d, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st),
                        "chip_id_masked");
    assert_string_equal(
        apply("{\"chip_id_masked\":\"allow\"}", &d, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st), "");
    assert_string_equal(
        apply("{\"chip_id_masked\":\"require\"}", &d, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, &st),
        "");
    /* VLEK signer. */
    assert_string_equal(
        apply("{\"signing_keys\":[\"vcek\"]}", &r, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VLEK, &st),
        "allowed_signing_key");
    /* Turin FMC counts. */
    SnpReport t = r;
    SnpTcb tt = {.fmc = 2, .bootloader = 3, .tee = 0, .snp = 8, .microcode = 115};
    t.reported_tcb = snp_tcb_encode(&tt, SNP_PRODUCT_TURIN);
    assert_string_equal(
        apply("{\"min_tcb\":{\"fmc\":3}}", &t, SNP_PRODUCT_TURIN, NT_CERT_ROLE_VCEK, &st),
        "min_tcb");
    assert_string_equal(
        apply("{\"min_tcb\":{\"fmc\":2,\"snp\":8}}", &t, SNP_PRODUCT_TURIN, NT_CERT_ROLE_VCEK, &st),
        "");
}

static void test_failure_details(void **state) {
    SnpReport r = base_report();
    _cleanup_(nt_policy_freep) NtPolicy *p =
        parse_ok("{\"measurements\":[\"" M_B "\"],\"vmpls\":[2,3],\"min_tcb\":{\"snp\":9}}");
    _cleanup_(nt_verdict_freep) NtVerdict *v = nt_verdict_new();
    nt_policy_apply(p, &r, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, v);
    const NtCheck *m = nt_verdict_find(v, "measurement");
    assert_int_equal(m->result, NT_CHECK_FAIL);
    assert_string_equal(m->expected, "one of [" M_B "]");
    assert_string_equal(m->found, M_A);
    const NtCheck *vm = nt_verdict_find(v, "vmpl");
    assert_string_equal(vm->expected, "one of [2, 3]");
    assert_string_equal(vm->found, "0");
    const NtCheck *t = nt_verdict_find(v, "min_tcb");
    assert_string_equal(t->expected, "snp>=9");
    assert_string_equal(t->found, "bl=3 tee=0 snp=8 ucode=115");
    const NtCheck *s = nt_verdict_find(v, "host_data");
    assert_int_equal(s->result, NT_CHECK_SKIP);
    assert_int_equal(nt_verdict_status(v), NT_VERDICT_POLICY);
}

/* Review finding D: a min_tcb naming only fmc fails on Milan/Genoa (it would check nothing) but is
 * checked on Turin; an absent vmpls says so explicitly. */
static void test_fmc_only_and_vmpl_default(void **state) {
    SnpReport r = base_report();
    _cleanup_(nt_policy_freep) NtPolicy *p = parse_ok("{\"min_tcb\":{\"fmc\":0}}");
    static const SnpProduct products[] = {SNP_PRODUCT_MILAN, SNP_PRODUCT_GENOA};
    for (size_t i = 0; i < ELEMENTSOF(products); i++) {
        SnpTcb tt = {.bootloader = 3, .tee = 0, .snp = 8, .microcode = 115};
        _cleanup_(nt_verdict_freep) NtVerdict *v = nt_verdict_new();
        assert_non_null(v);
        r.reported_tcb = snp_tcb_encode(&tt, products[i]);
        nt_policy_apply(p, &r, products[i], NT_CERT_ROLE_VCEK, v);
        assert_int_equal(nt_verdict_status(v), NT_VERDICT_POLICY);
        const NtCheck *c = nt_verdict_first_failure(v);
        assert_string_equal(c->name, "min_tcb");
        assert_int_equal(c->error, -EKEYREJECTED);
        assert_non_null(strstr(c->detail, "min_tcb names only fmc, which milan/genoa TCBs lack"));
        assert_non_null(strstr(c->detail, snp_product_to_string(products[i])));
        const NtCheck *vm = nt_verdict_find(v, "vmpl");
        assert_int_equal(vm->result, NT_CHECK_SKIP);
        assert_string_equal(vm->detail, "not configured: any VMPL accepted");
    }
    /* The same policy on Turin checks the FMC SPL (fmc >= 0 holds). */
    SnpTcb tt = {.fmc = 1, .bootloader = 3, .tee = 0, .snp = 8, .microcode = 115};
    _cleanup_(nt_verdict_freep) NtVerdict *v = nt_verdict_new();
    assert_non_null(v);
    r.reported_tcb = snp_tcb_encode(&tt, SNP_PRODUCT_TURIN);
    nt_policy_apply(p, &r, SNP_PRODUCT_TURIN, NT_CERT_ROLE_VCEK, v);
    assert_int_equal(nt_verdict_status(v), NT_VERDICT_OK);
    assert_int_equal(nt_verdict_find(v, "min_tcb")->result, NT_CHECK_PASS);
}

static void test_tcb_meets(void **state) {
    SnpTcb t = {.fmc = 0, .bootloader = 1, .tee = 1, .snp = 5, .microcode = 200};
    SnpTcb min = {.fmc = 9, .bootloader = 1, .tee = 1, .snp = 6, .microcode = 100};
    const char *comp = NULL;
    unsigned all = NT_TCB_BOOTLOADER | NT_TCB_TEE | NT_TCB_SNP | NT_TCB_MICROCODE | NT_TCB_FMC;
    assert_false(nt_tcb_meets(&t, &min, all, SNP_PRODUCT_GENOA, &comp));
    assert_string_equal(comp, "snp");
    assert_true(nt_tcb_meets(&t, &min, NT_TCB_MICROCODE | NT_TCB_FMC, SNP_PRODUCT_GENOA, &comp));
    assert_false(nt_tcb_meets(&t, &min, NT_TCB_MICROCODE | NT_TCB_FMC, SNP_PRODUCT_TURIN, &comp));
    assert_string_equal(comp, "fmc");
    /* One 64-bit comparison would say t > min here (microcode is the top byte). */
    assert_true(snp_tcb_encode(&t, SNP_PRODUCT_GENOA) > snp_tcb_encode(&min, SNP_PRODUCT_GENOA));
}

static void test_oom(void **state) {
    /* Every allocation of the parser and of a failing appraisal, failed in turn. */
    static const char text[] = "{\"measurements\":[\"" M_A "\",\"" M_B "\"],\"host_data\":[\"" HOST1
                               "\"],\"min_tcb\":{\"snp\":9}}";
    SnpReport r = base_report();
    long n;
    for (n = 0;; n++) {
        NtPolicy *p = NULL;
        char *err = NULL;
        nt_alloc_fail_after(n);
        int k = nt_policy_parse(text, strlen(text), &p, &err);
        nt_alloc_fail_after(-1);
        free(err);
        if (k == 0) {
            nt_policy_free(p);
            break;
        }
        assert_int_equal(k, -ENOMEM);
        assert_null(p);
    }
    assert_true(n >= 3); /* policy, two lists */
    _cleanup_(nt_policy_freep) NtPolicy *p = parse_ok(text);
    for (n = 0;; n++) {
        nt_alloc_fail_after(n);
        NtVerdict *v = nt_verdict_new();
        if (v)
            nt_policy_apply(p, &r, SNP_PRODUCT_MILAN, NT_CERT_ROLE_VCEK, v);
        nt_alloc_fail_after(-1);
        if (!v)
            continue;
        /* The failures are recorded even when their strings could not be allocated. */
        assert_int_equal(nt_verdict_status(v), NT_VERDICT_POLICY);
        assert_string_equal(nt_verdict_first_failure(v)->name, "host_data");
        bool complete = !v->alloc_failed;
        nt_verdict_free(v);
        if (complete)
            break;
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_fields),    cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_apply),
        cmocka_unit_test(test_failure_details), cmocka_unit_test(test_fmc_only_and_vmpl_default),
        cmocka_unit_test(test_tcb_meets),       cmocka_unit_test(test_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
