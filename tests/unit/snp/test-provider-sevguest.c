/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sev-guest provider against a fake kernel + firmware behind its transport hook. The fake
 * checks the exact bytes the provider sends (msg_version, user_data and vmpl placement, reserved
 * fields zero, page-aligned certificate buffers) and answers from a simulated chip, or with
 * injected errors: firmware errors, "invalid length then success", "busy". Also: provider
 * selection, auto-detection and the missing-provider message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/macro.h"
#include "snp/certtable.h"
#include "snp/provider-sevguest.h"
#include "snp/provider.h"
#include "snp/sim.h"

static char base[] = "/tmp/nt-test-sevguest-XXXXXX";
static char chip_dir[300];

typedef struct Fake {
    SimChip *chip;
    unsigned calls;
    unsigned long last_request;
    unsigned busy; /* answer busy this many times */
    uint32_t fw_error;
    uint32_t vmm_error;
    uint32_t resp_status;  /* forced MSG_*_RSP status */
    uint32_t report_size;  /* 0: the real size */
    uint32_t certs_needed; /* 0: the table's size */
    bool no_certs;
    bool corrupt_certs;
    uint32_t seen_certs_len[8];
    unsigned n_seen_certs;
    uint8_t seen_user_data[64];
    uint32_t seen_vmpl;
    struct snp_derived_key_req seen_key;
} Fake;

static Fake fake;

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int fake_report(const struct snp_report_req *req, uint8_t *resp) {
    uint8_t rep[SNP_REPORT_SIZE];
    int r;

    for (size_t i = 0; i < sizeof req->rsvd; i++)
        assert_int_equal(req->rsvd[i], 0);
    memcpy(fake.seen_user_data, req->user_data, 64);
    fake.seen_vmpl = req->vmpl;
    r = sim_chip_get_report(fake.chip, req->user_data, req->vmpl, rep);
    memset(resp, 0, 4000);
    if (r < 0 || fake.resp_status) {
        put32(resp, fake.resp_status ? fake.resp_status : 0x16); /* INVALID_PARAM */
        return 0;
    }
    put32(resp + 4, fake.report_size ? fake.report_size : SNP_REPORT_SIZE);
    memcpy(resp + 0x20, rep, sizeof rep);
    return 0;
}

static int fake_transport(void *userdata, unsigned long request,
                          struct snp_guest_request_ioctl *io) {
    assert_ptr_equal(userdata, &fake);
    fake.calls++;
    fake.last_request = request;
    assert_int_equal(io->msg_version, 1);
    assert_true(io->req_data != 0);
    assert_true(io->resp_data != 0);
    assert_int_equal(io->exitinfo2, 0);
    if (fake.busy > 0) {
        fake.busy--;
        io->vmm_error = SNP_GUEST_VMM_ERR_BUSY;
        return -EAGAIN;
    }
    if (fake.fw_error || fake.vmm_error) {
        io->fw_error = fake.fw_error;
        io->vmm_error = fake.vmm_error;
        return -EIO;
    }
    switch (request) {
    case SNP_GET_REPORT:
        return fake_report((const struct snp_report_req *)(uintptr_t)io->req_data,
                           (uint8_t *)(uintptr_t)io->resp_data);
    case SNP_GET_EXT_REPORT: {
        struct snp_ext_report_req *ext = (struct snp_ext_report_req *)(uintptr_t)io->req_data;
        _cleanup_free_ uint8_t *table = NULL;
        size_t len = 0;
        uint32_t need;

        assert_int_equal(ext->certs_address % 4096, 0);
        assert_int_equal(ext->certs_len % 4096, 0);
        assert_true(ext->certs_len > 0);
        assert_true(fake.n_seen_certs < ELEMENTSOF(fake.seen_certs_len));
        fake.seen_certs_len[fake.n_seen_certs++] = ext->certs_len;
        assert_int_equal(sim_chip_get_cert_table(fake.chip, &table, &len), 0);
        need = fake.certs_needed ? fake.certs_needed : (uint32_t)len;
        if (ext->certs_len < need) {
            ext->certs_len = need;
            io->vmm_error = SNP_GUEST_VMM_ERR_INVALID_LEN;
            return -EIO;
        }
        if (!fake.no_certs)
            memcpy((uint8_t *)(uintptr_t)ext->certs_address, table, len);
        if (fake.corrupt_certs)
            put32((uint8_t *)(uintptr_t)ext->certs_address + 16, ext->certs_len + 10);
        return fake_report(&ext->data, (uint8_t *)(uintptr_t)io->resp_data);
    }
    case SNP_GET_DERIVED_KEY: {
        const struct snp_derived_key_req *k =
            (const struct snp_derived_key_req *)(uintptr_t)io->req_data;
        uint8_t *resp = (uint8_t *)(uintptr_t)io->resp_data;
        SnpDerivedKeyRequest req = {
            .root_key_select = k->root_key_select,
            .guest_field_select = k->guest_field_select,
            .vmpl = k->vmpl,
            .guest_svn = k->guest_svn,
            .tcb_version = k->tcb_version,
        };
        _cleanup_(secret_freep) Secret *key = NULL;

        assert_int_equal(k->rsvd, 0);
        fake.seen_key = *k;
        memset(resp, 0, 64);
        if (sim_chip_get_derived_key(fake.chip, &req, &key) < 0) {
            put32(resp, 0x16);
            return 0;
        }
        memcpy(resp + 0x20, secret_const_data(key), 32);
        return 0;
    }
    default:
        fail_msg("unexpected ioctl 0x%lx", request);
    }
    return -ENOTTY;
}

static int group_setup(void **state) {
    SimInitOptions o = {SNP_PRODUCT_MILAN, false, 3};
    if (!mkdtemp(base))
        return -1;
    snprintf(chip_dir, sizeof chip_dir, "%s/chip", base);
    return sim_chip_init(chip_dir, &o) < 0 ? -1 : 0;
}

static int group_teardown(void **state) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state) {
    memset(&fake, 0, sizeof fake);
    return sim_chip_load(chip_dir, &fake.chip) < 0 ? -1 : 0;
}

static int teardown(void **state) {
    fake.chip = sim_chip_free(fake.chip);
    return 0;
}

static SnpProvider *new_provider(void) {
    SnpProvider *p = NULL;
    assert_int_equal(snp_provider_sevguest_new(fake_transport, &fake, &p), 0);
    assert_string_equal(snp_provider_info(p)->name, "sev-guest");
    return p;
}

static void test_report(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = new_provider();
    _cleanup_free_ uint8_t *rep = NULL;
    uint8_t data[64];
    size_t len = 0;
    SnpReport r;

    for (int i = 0; i < 64; i++)
        data[i] = (uint8_t)(0xA0 + i);
    assert_int_equal(snp_provider_get_report(p, data, 2, &rep, &len), 0);
    assert_int_equal(fake.calls, 1);
    assert_int_equal(fake.last_request, SNP_GET_REPORT);
    assert_memory_equal(fake.seen_user_data, data, 64);
    assert_int_equal(fake.seen_vmpl, 2);
    assert_int_equal(len, SNP_REPORT_SIZE);
    assert_int_equal(snp_report_parse(rep, len, &r, NULL), 0);
    assert_memory_equal(r.report_data, data, 64);
    assert_int_equal(r.vmpl, 2);

    /* VMPL above 3: refused before any ioctl. */
    assert_int_equal(snp_provider_get_report(p, data, 4, &rep, &len), -EINVAL);
    assert_int_equal(fake.calls, 1);
}

static void test_report_errors(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = new_provider();
    uint8_t data[64] = {0}, *rep = NULL;
    size_t len = 0;

    /* Firmware refuses a VMPL below the guest's: MSG_REPORT_RSP status INVALID_PARAM. */
    sim_chip_launch(fake.chip)->vmpl = 2;
    assert_int_equal(snp_provider_get_report(p, data, 1, &rep, &len), -EINVAL);
    sim_chip_launch(fake.chip)->vmpl = 0;
    fake.resp_status = 0x27;
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep, &len), -ENOKEY);
    fake.resp_status = 0;
    fake.report_size = 1000;
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep, &len), -EPROTO);
    fake.report_size = 0;
    /* exitinfo2 errors */
    fake.fw_error = 0x16;
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep, &len), -EINVAL);
    fake.fw_error = 0x1D;
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep, &len), -EIO);
    fake.fw_error = 0;
    fake.vmm_error = 9;
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep, &len), -EPROTO);
    assert_null(rep);
}

static void test_busy(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = new_provider();
    _cleanup_free_ uint8_t *rep = NULL;
    uint8_t data[64] = {1}, *rep2 = NULL;
    size_t len = 0;

    fake.busy = 2;
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep, &len), 0);
    assert_int_equal(fake.calls, 3);
    fake.calls = 0;
    fake.busy = 1000;
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep2, &len), -EBUSY);
    assert_int_equal(fake.calls, SNP_SEVGUEST_BUSY_RETRIES + 1);
    assert_null(rep2);
}

static void test_ext_report(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = new_provider();
    _cleanup_free_ uint8_t *rep = NULL, *certs = NULL, *table = NULL;
    uint8_t data[64] = {7};
    size_t len = 0, certs_len = 0, table_len = 0;
    SnpCertTable t;

    assert_int_equal(snp_provider_get_ext_report(p, data, 0, &rep, &len, &certs, &certs_len), 0);
    assert_int_equal(fake.last_request, SNP_GET_EXT_REPORT);
    assert_int_equal(fake.n_seen_certs, 1);
    assert_int_equal(fake.seen_certs_len[0], SNP_SEVGUEST_CERTS_INITIAL);
    assert_int_equal(sim_chip_get_cert_table(fake.chip, &table, &table_len), 0);
    assert_int_equal(certs_len, table_len);
    assert_memory_equal(certs, table, table_len);
    assert_int_equal(snp_cert_table_parse(certs, certs_len, &t), 0);
    assert_non_null(snp_cert_table_find(&t, SNP_CERT_VCEK));
    assert_memory_equal(fake.seen_user_data, data, 64);
}

static void test_ext_report_grows(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = new_provider();
    _cleanup_free_ uint8_t *rep = NULL, *certs = NULL;
    uint8_t data[64] = {7}, *rep2 = NULL, *certs2 = NULL;
    size_t len = 0, certs_len = 0;

    /* invalid length, then success with the page-rounded length the kernel asked for */
    fake.certs_needed = SNP_SEVGUEST_CERTS_INITIAL + 100;
    assert_int_equal(snp_provider_get_ext_report(p, data, 0, &rep, &len, &certs, &certs_len), 0);
    assert_int_equal(fake.n_seen_certs, 2);
    assert_int_equal(fake.seen_certs_len[1], SNP_SEVGUEST_CERTS_INITIAL + 4096);
    assert_non_null(certs);

    /* a host that asks for more than the limit */
    fake.n_seen_certs = 0;
    fake.certs_needed = SNP_SEVGUEST_CERTS_MAX + 1;
    assert_int_equal(snp_provider_get_ext_report(p, data, 0, &rep2, &len, &certs2, &certs_len),
                     -E2BIG);
    assert_null(rep2);
    assert_null(certs2);
}

static void test_ext_report_no_or_bad_certs(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = new_provider();
    _cleanup_free_ uint8_t *rep = NULL;
    uint8_t data[64] = {7}, *certs = (uint8_t *)"x", *rep2 = NULL, *certs2 = NULL;
    size_t len = 0, certs_len = 99;

    fake.no_certs = true;
    assert_int_equal(snp_provider_get_ext_report(p, data, 0, &rep, &len, &certs, &certs_len), 0);
    assert_null(certs);
    assert_int_equal(certs_len, 0);
    assert_non_null(rep);

    fake.no_certs = false;
    fake.corrupt_certs = true; /* first entry points outside the buffer */
    assert_int_equal(snp_provider_get_ext_report(p, data, 0, &rep2, &len, &certs2, &certs_len),
                     -EBADMSG);
    assert_null(rep2);
}

static void test_derived_key(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = new_provider();
    _cleanup_(secret_freep) Secret *k1 = NULL, *k2 = NULL;
    Secret *k3 = NULL;
    SnpDerivedKeyRequest req = {
        .root_key_select = SNP_KEY_ROOT_VCEK,
        .guest_field_select = SNP_GFS_MEASUREMENT | SNP_GFS_GUEST_POLICY | SNP_GFS_TCB_VERSION,
        .vmpl = 1,
        .guest_svn = 0,
        .tcb_version = sim_chip_launch(fake.chip)->committed_tcb,
    };

    assert_int_equal(snp_provider_get_derived_key(p, &req, &k1), 0);
    assert_int_equal(fake.last_request, SNP_GET_DERIVED_KEY);
    assert_int_equal(fake.seen_key.root_key_select, SNP_KEY_ROOT_VCEK);
    assert_int_equal(fake.seen_key.guest_field_select, req.guest_field_select);
    assert_int_equal(fake.seen_key.vmpl, 1);
    assert_int_equal(fake.seen_key.tcb_version, req.tcb_version);
    assert_int_equal(sim_chip_get_derived_key(fake.chip, &req, &k2), 0);
    assert_int_equal(secret_size(k1), 32);
    assert_memory_equal(secret_const_data(k1), secret_const_data(k2), 32);

    req.guest_svn = 1; /* above the guest's SVN: firmware INVALID_PARAM */
    assert_int_equal(snp_provider_get_derived_key(p, &req, &k3), -EINVAL);
    assert_null(k3);
    req.guest_svn = 0;
    fake.calls = 0;
    req.guest_field_select |= SNP_GFS_LAUNCH_MIT_VECTOR;
    assert_int_equal(snp_provider_get_derived_key(p, &req, &k3), -EOPNOTSUPP);
    assert_int_equal(fake.calls, 0);
}

static void test_fw_strerror(void **state) {
    assert_string_equal(snp_fw_strerror(0x16), "invalid parameter");
    assert_non_null(strstr(snp_fw_strerror(0x27), "invalid key"));
    assert_non_null(strstr(snp_fw_strerror(UINT32_MAX), "no firmware call"));
    assert_string_equal(snp_fw_strerror(0x1E), "unknown firmware status");
    assert_string_equal(snp_fw_strerror(0x1234), "unknown firmware status");
}

static void test_open_and_autodetect(void **state) {
    SnpProvider *p = NULL;
    char dev[400], missing[400];
    const char *msg;
    int fd;

    snprintf(missing, sizeof missing, "%s/no-such", base);
    assert_int_equal(setenv("NITRIDE_SEV_GUEST_DEV", missing, 1), 0);
    assert_int_equal(setenv("NITRIDE_TSM_ROOT", missing, 1), 0);
    assert_int_equal(unsetenv("NITRIDE_SIM_DIR"), 0);

    assert_int_equal(snp_provider_open(NULL, NULL, &p), -ENODEV);
    assert_null(p);
    msg = snp_provider_missing_message();
    assert_non_null(strstr(msg, missing));
    assert_non_null(strstr(msg, "nitride sim init"));
    assert_non_null(strstr(msg, "--provider sim"));
    assert_non_null(strstr(msg, "NITRIDE_SIM_DIR"));
    assert_int_equal(snp_provider_open("auto", NULL, &p), -ENODEV);
    assert_int_equal(snp_provider_open("sev-guest", NULL, &p), -ENOENT);
    assert_int_equal(snp_provider_open("tsm", NULL, &p), -ENOENT);
    assert_int_equal(snp_provider_open("sgx", NULL, &p), -EINVAL);
    /* sim needs a directory; auto never picks sim */
    assert_int_equal(snp_provider_open("sim", NULL, &p), -ENODEV);
    assert_int_equal(setenv("NITRIDE_SIM_DIR", chip_dir, 1), 0);
    assert_int_equal(snp_provider_open(NULL, NULL, &p), -ENODEV);
    assert_int_equal(snp_provider_open("sim", NULL, &p), 0);
    assert_string_equal(snp_provider_info(p)->name, "sim");
    assert_string_equal(snp_provider_info(p)->detail, chip_dir);
    p = snp_provider_free(p);
    assert_int_equal(unsetenv("NITRIDE_SIM_DIR"), 0);
    assert_int_equal(snp_provider_open("sim", missing, &p), -ENOENT);

    /* a device node that opens: auto picks sev-guest */
    snprintf(dev, sizeof dev, "%s/sev-guest", base);
    fd = open(dev, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(setenv("NITRIDE_SEV_GUEST_DEV", dev, 1), 0);
    assert_int_equal(snp_provider_open(NULL, NULL, &p), 0);
    assert_string_equal(snp_provider_info(p)->name, "sev-guest");
    assert_string_equal(snp_provider_info(p)->detail, dev);
    p = snp_provider_free(p);
    assert_int_equal(unsetenv("NITRIDE_SEV_GUEST_DEV"), 0);
    assert_int_equal(unsetenv("NITRIDE_TSM_ROOT"), 0);
}

static void test_sim_provider(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = NULL;
    _cleanup_free_ uint8_t *rep = NULL, *certs = NULL;
    _cleanup_(secret_freep) Secret *k1 = NULL, *k2 = NULL;
    uint8_t data[64] = {3};
    size_t len = 0, certs_len = 0;
    SnpCertTable t;
    SnpReport r;
    SnpDerivedKeyRequest req = {.guest_field_select = SNP_GFS_MEASUREMENT};

    assert_int_equal(snp_provider_open("sim", chip_dir, &p), 0);
    assert_int_equal(snp_provider_get_ext_report(p, data, 1, &rep, &len, &certs, &certs_len), 0);
    assert_int_equal(snp_report_parse(rep, len, &r, NULL), 0);
    assert_int_equal(r.vmpl, 1);
    assert_memory_equal(r.report_data, data, 64);
    assert_int_equal(snp_cert_table_parse(certs, certs_len, &t), 0);
    assert_int_equal(t.n_entries, 3);
    assert_int_equal(snp_provider_get_derived_key(p, &req, &k1), 0);
    assert_int_equal(sim_chip_get_derived_key(fake.chip, &req, &k2), 0);
    assert_memory_equal(secret_const_data(k1), secret_const_data(k2), 32);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ext_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ext_report_grows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ext_report_no_or_bad_certs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_derived_key, setup, teardown),
        cmocka_unit_test(test_fw_strerror),
        cmocka_unit_test(test_open_and_autodetect),
        cmocka_unit_test_setup_teardown(test_sim_provider, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
