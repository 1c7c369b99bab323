/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snp_measure() and snp_ovmf_parse(): every row of tests/vectors/measure/expected.txt (values
 * computed by virtee's sev-snp-measure, see SOURCE.txt there), and strict refusal of malformed
 * firmware images built from the real AmdSev footer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "config.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "snp/guid.h"
#include "snp/measure.h"
#include "snp/ovmf.h"

#define VEC NT_SOURCE_ROOT "/tests/vectors/measure/"
#define AMDSEV VEC "ovmf_AmdSev_suffix.bin"
#define OVMFX64 VEC "ovmf_OvmfX64_suffix.bin"
#define DEBIAN_OVMF "/usr/share/ovmf/OVMF.fd"

static char *trim(char *s) {
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Each row: name | ovmf | vcpus | vcpu-type | vmm | guest-features | kernel | initrd | append |
 * expected. "-" is absent; the Debian row names the system's OVMF.fd. */
static void test_vectors(void **state) {
    FILE *f = fopen(VEC "expected.txt", "re");
    assert_non_null(f);
    char line[1024];
    unsigned rows = 0, errors = 0;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char *col[10];
        char *p = line;
        for (int i = 0; i < 10; i++) {
            char *bar = strchr(p, '|');
            if (i < 9) {
                assert_non_null(bar);
                *bar = '\0';
            }
            col[i] = trim(p);
            p = bar ? bar + 1 : p;
        }
        SnpMeasureInput in = {.vcpus = (unsigned)atoi(col[2])};
        char ovmf[512];
        if (strncmp(col[1], "/usr/share/ovmf/OVMF.fd", 23) == 0)
            snprintf(ovmf, sizeof(ovmf), "%s", DEBIAN_OVMF);
        else
            snprintf(ovmf, sizeof(ovmf), VEC "%s", col[1]);
        in.ovmf_path = ovmf;
        if (strcmp(col[3], "-") != 0)
            assert_int_equal(snp_vcpu_sig_from_name(col[3], &in.vcpu_sig), 0);
        in.vmm = snp_vmm_from_string(col[4]);
        assert_true(in.vmm >= 0);
        in.guest_features = strtoull(col[5], NULL, 0);
        if (strcmp(col[6], "-") != 0) {
            in.kernel_path = col[6];
            in.initrd_path = strcmp(col[7], "-") != 0 ? col[7] : NULL;
            in.append = strcmp(col[8], "-") != 0 ? col[8] : NULL;
        }
        SnpMeasureResult res;
        char err[SNP_OVMF_ERR_MAX] = "";
        int r = snp_measure(&in, &res, err);
        if (strncmp(col[9], "error", 5) == 0) {
            fprintf(stderr, "%s: refused: %s\n", col[0], err);
            assert_true(r < 0);
            assert_non_null(strstr(err, "SNP_KERNEL_HASHES"));
            errors++;
        } else {
            if (r < 0)
                fprintf(stderr, "%s: %s\n", col[0], err);
            assert_int_equal(r, 0);
            char hex[SNP_MEASUREMENT_SIZE * 2 + 1];
            hex_encode(res.measurement, SNP_MEASUREMENT_SIZE, hex);
            fprintf(stderr, "%s: %s\n", col[0], hex);
            assert_string_equal(hex, col[9]);
        }
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, 8);
    assert_int_equal(errors, 1);
}

static void test_debian_image_hash(void **state) {
    /* The Debian row is only meaningful for the exact image: check it is the one in SOURCE.txt. */
    SnpMeasureInput in = {
        .ovmf_path = DEBIAN_OVMF, .vcpus = 1, .vmm = SNP_VMM_QEMU, .guest_features = 1};
    SnpMeasureResult res;
    char err[SNP_OVMF_ERR_MAX];
    assert_int_equal(snp_measure(&in, &res, err), 0);
    char hex[65];
    hex_encode(res.ovmf_sha256, 32, hex);
    assert_string_equal(hex, "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773");
    assert_int_equal(res.ovmf_size, 2 * 1024 * 1024);
}

/* ---- strict refusals ---- */

static uint8_t *load(const char *path, size_t *len) {
    uint8_t *b = NULL;
    assert_int_equal(read_full_file(path, 1 << 20, &b, len), 0);
    return b;
}

static char tmpdir[] = "/tmp/nt-test-measure-XXXXXX";

static int setup(void **state) {
    return mkdtemp(tmpdir) ? 0 : -1;
}
static int teardown(void **state) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Measures buf written as a firmware file; returns snp_measure's result, message in err. */
static int measure_buf(const uint8_t *buf, size_t len, const char *kernel, char *err) {
    char path[256];
    snprintf(path, sizeof(path), "%s/fw.bin", tmpdir);
    assert_int_equal(write_file_atomic(path, buf, len, 0644), 0);
    SnpMeasureInput in = {.ovmf_path = path,
                          .kernel_path = kernel,
                          .vcpus = 2,
                          .vcpu_sig = 0x800f12,
                          .vmm = SNP_VMM_QEMU,
                          .guest_features = 1};
    SnpMeasureResult res;
    err[0] = '\0';
    int r = snp_measure(&in, &res, err);
    fprintf(stderr, "  -> %d %s\n", r, err);
    return r;
}

static size_t find(const uint8_t *buf, size_t len, const void *needle, size_t n) {
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(buf + i, needle, n) == 0)
            return i;
    fail_msg("needle not found");
    return 0;
}

static void test_refuse_truncated(void **state) {
    size_t len;
    uint8_t *b = load(AMDSEV, &len);
    char err[SNP_OVMF_ERR_MAX];
    assert_int_equal(measure_buf(b, len, NULL, err), 0); /* the untouched image is fine */
    assert_int_equal(measure_buf(b, len - 100, NULL, err), -EBADMSG); /* end cut off */
    assert_non_null(strstr(err, "truncated"));
    assert_int_equal(measure_buf(b + 100, len - 100, NULL, err), -EBADMSG); /* start cut off */
    assert_int_equal(measure_buf(b, 0, NULL, err), -EBADMSG);
    /* a page-sized image whose end is not the footer (the first page of a bigger image) */
    uint8_t two[8192];
    memcpy(two, b, 4096);
    memset(two + 4096, 0xff, 4096);
    assert_int_equal(measure_buf(two, sizeof(two), NULL, err), -EBADMSG);
    assert_non_null(strstr(err, "footer"));
    free(b);
}

static void test_refuse_footer_length(void **state) {
    size_t len;
    uint8_t *b = load(AMDSEV, &len);
    char err[SNP_OVMF_ERR_MAX];
    uint8_t lo = b[len - 50], hi = b[len - 49];
    uint16_t orig = (uint16_t)(lo | (hi << 8));
    static const uint16_t bad[] = {0, 17, 0xffff, 4096};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b[len - 50] = (uint8_t)bad[i];
        b[len - 49] = (uint8_t)(bad[i] >> 8);
        assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
        assert_non_null(strstr(err, "length"));
    }
    /* One byte short or long: the walk no longer lands on entry boundaries. */
    for (int d = -1; d <= 1; d += 2) {
        uint16_t v = (uint16_t)(orig + d);
        b[len - 50] = (uint8_t)v;
        b[len - 49] = (uint8_t)(v >> 8);
        assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    }
    b[len - 50] = lo;
    b[len - 49] = hi;
    /* An entry inside the table with a bad length: the metadata entry's u16 before its GUID. */
    size_t g = find(b, len, SNP_GUID_OVMF_SEV_METADATA, 16);
    b[g - 2] = 3;
    b[g - 1] = 0;
    assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    assert_non_null(strstr(err, "bad length"));
    free(b);
}

static void test_refuse_metadata(void **state) {
    size_t len;
    uint8_t *b = load(AMDSEV, &len);
    char err[SNP_OVMF_ERR_MAX];
    size_t h = find(b, len, "ASEV", 4);

    b[h + 8] = 2; /* version 2 */
    assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    assert_non_null(strstr(err, "unknown version 2"));
    b[h + 8] = 1;

    b[h] = 'X'; /* signature */
    assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    assert_non_null(strstr(err, "signature"));
    b[h] = 'A';

    b[h + 16 + 8] = 0x7f; /* first section's type */
    assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    assert_non_null(strstr(err, "unknown type 0x7f"));
    b[h + 16 + 8] = 1;

    b[h + 16] |= 0x10; /* first section's GPA no longer page-aligned */
    assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    b[h + 16] &= (uint8_t)~0x10;

    b[h + 4] += 1; /* length not matching the count */
    assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    b[h + 4] -= 1;

    assert_int_equal(measure_buf(b, len, NULL, err), 0);
    free(b);
}

static void test_refuse_no_metadata(void **state) {
    size_t len;
    uint8_t *b = load(AMDSEV, &len);
    char err[SNP_OVMF_ERR_MAX];
    /* The footer table intact but without the SEV metadata entry (its GUID changed). */
    size_t g = find(b, len, SNP_GUID_OVMF_SEV_METADATA, 16);
    b[g] ^= 0xff;
    assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    assert_non_null(strstr(err, "no SEV metadata"));
    /* A plain non-SEV image: all zero. */
    memset(b, 0, len);
    assert_int_equal(measure_buf(b, len, NULL, err), -EBADMSG);
    free(b);
}

static void test_refuse_kernel_without_hashes(void **state) {
    size_t len;
    uint8_t *b = load(OVMFX64, &len);
    char err[SNP_OVMF_ERR_MAX];
    assert_int_equal(measure_buf(b, len, NULL, err), 0);
    assert_int_equal(measure_buf(b, len, "/dev/null", err), -EINVAL);
    assert_non_null(strstr(err, "no SNP_KERNEL_HASHES section"));
    free(b);
}

static void test_inputs_change_digest(void **state) {
    /* Each input enters the digest: kernel bytes, initrd, command line, vCPUs, features. */
    char kpath[256], ipath[256];
    snprintf(kpath, sizeof(kpath), "%s/k", tmpdir);
    snprintf(ipath, sizeof(ipath), "%s/i", tmpdir);
    assert_int_equal(write_file_atomic(kpath, "kernel", 6, 0644), 0);
    assert_int_equal(write_file_atomic(ipath, "initrd", 6, 0644), 0);
    SnpMeasureInput base = {.ovmf_path = AMDSEV,
                            .kernel_path = kpath,
                            .initrd_path = ipath,
                            .append = "ro",
                            .vcpus = 2,
                            .vcpu_sig = 0xa00f11,
                            .vmm = SNP_VMM_QEMU,
                            .guest_features = 1};
    SnpMeasureInput v[6];
    for (int i = 0; i < 6; i++)
        v[i] = base;
    v[1].initrd_path = NULL;
    v[2].append = "rw";
    v[3].vcpus = 3;
    v[4].guest_features = 0x21;
    v[5].vcpu_sig = 0xa10f11;
    SnpMeasureResult res[6];
    char err[SNP_OVMF_ERR_MAX];
    for (int i = 0; i < 6; i++)
        assert_int_equal(snp_measure(&v[i], &res[i], err), 0);
    for (int i = 0; i < 6; i++)
        for (int j = i + 1; j < 6; j++)
            assert_memory_not_equal(res[i].measurement, res[j].measurement, 48);
    /* the command line is hashed with its NUL */
    uint8_t want[32];
    unsigned n;
    assert_int_equal(EVP_Digest("ro", 3, want, &n, EVP_sha256(), NULL), 1);
    assert_memory_equal(res[0].cmdline_sha256, want, 32);
    /* bad parameters */
    SnpMeasureInput bad = base;
    bad.guest_features = 0x20;
    assert_int_equal(snp_measure(&bad, &res[0], err), -EINVAL);
    bad = base;
    bad.vcpus = 0;
    assert_int_equal(snp_measure(&bad, &res[0], err), -EINVAL);
    bad = base;
    bad.kernel_path = NULL;
    assert_int_equal(snp_measure(&bad, &res[0], err), -EINVAL);
}

static void test_cpu_sigs(void **state) {
    uint32_t s;
    assert_int_equal(snp_vcpu_sig_from_name("EPYC-v4", &s), 0);
    assert_int_equal(s, 0x800f12);
    assert_int_equal(snp_vcpu_sig_from_name("EPYC-Rome-v2", &s), 0);
    assert_int_equal(s, 0x830f10);
    assert_int_equal(snp_vcpu_sig_from_name("EPYC-Milan", &s), 0);
    assert_int_equal(s, 0xa00f11);
    assert_int_equal(snp_vcpu_sig_from_name("EPYC-Genoa-v1", &s), 0);
    assert_int_equal(s, 0xa10f10);
    assert_int_equal(snp_vcpu_sig_from_name("EPYC-Turin", &s), 0);
    assert_int_equal(s, 0xb00f00);
    assert_int_equal(snp_vcpu_sig_from_name("EPYC-v5", &s), -ENOENT);
    assert_int_equal(snp_vcpu_sig_from_name("EPYC-Milanx", &s), -ENOENT);
    assert_int_equal(snp_vcpu_sig_from_name("Skylake", &s), -ENOENT);
    assert_int_equal(snp_cpu_sig(25, 1, 1, &s), 0);
    assert_int_equal(s, 0xa00f11);
    assert_int_equal(snp_cpu_sig(25, 1, 16, &s), -EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_debian_image_hash),
        cmocka_unit_test(test_refuse_truncated),
        cmocka_unit_test(test_refuse_footer_length),
        cmocka_unit_test(test_refuse_metadata),
        cmocka_unit_test(test_refuse_no_metadata),
        cmocka_unit_test(test_refuse_kernel_without_hashes),
        cmocka_unit_test(test_inputs_change_digest),
        cmocka_unit_test(test_cpu_sigs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
