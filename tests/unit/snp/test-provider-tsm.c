/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configfs-tsm provider against a fake configfs under a temp dir. A thread plays the kernel:
 * it watches each report entry with inotify; a close-after-write of privlevel or inblob bumps
 * generation (as configfs-tsm does), and after inblob it produces the report from a simulated
 * chip. outblob is a FIFO, so the provider's read blocks until the "kernel" has answered, as a
 * read of the real outblob does. Entry creation/removal go through SnpTsmOps, because configfs
 * attribute files appear and vanish with the directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/macro.h"
#include "snp/certtable.h"
#include "snp/provider-tsm.h"
#include "snp/provider.h"
#include "snp/sim.h"

static char base[] = "/tmp/nt-test-tsm-XXXXXX";
static char chip_dir[300], root[300];

typedef struct Kernel {
    int ifd;
    int stop[2];
    pthread_t thread;
    pthread_mutex_t lock;
    SimChip *chip;
    const char *provider;
    unsigned extra_bumps; /* a racing writer: extra generation bumps per inblob write */
    bool aux;
    unsigned entries_made, entries_removed, reports;
    size_t last_inblob_len;
    struct {
        int wd;
        char path[400];
        uint64_t gen;
    } e[8];
} Kernel;

static Kernel k;

static void write_attr(const char *dir, const char *name, const void *data, size_t len) {
    char p[500];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    /* atomic: the provider never sees a half-written attribute */
    assert_int_equal(write_file_atomic(p, data, len, 0644), 0);
}

static void set_generation(const char *dir, uint64_t g) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu\n", (unsigned long long)g);
    write_attr(dir, "generation", buf, strlen(buf));
}

static int fake_make_dir(const char *path, void *userdata) {
    char p[500];
    int wd;

    assert_ptr_equal(userdata, &k);
    if (mkdir(path, 0700) < 0)
        return -errno;
    set_generation(path, 0);
    write_attr(path, "provider", k.provider, strlen(k.provider));
    write_attr(path, "privlevel", "0\n", 2);
    write_attr(path, "inblob", "", 0);
    snprintf(p, sizeof p, "%s/outblob", path);
    assert_int_equal(mkfifo(p, 0600), 0);
    pthread_mutex_lock(&k.lock);
    wd = inotify_add_watch(k.ifd, path, IN_CLOSE_WRITE);
    assert_true(wd >= 0);
    for (size_t i = 0; i < ELEMENTSOF(k.e); i++)
        if (k.e[i].wd == 0) {
            k.e[i].wd = wd;
            snprintf(k.e[i].path, sizeof k.e[i].path, "%s", path);
            k.e[i].gen = 0;
            break;
        }
    k.entries_made++;
    pthread_mutex_unlock(&k.lock);
    return 0;
}

static int fake_remove_dir(const char *path, void *userdata) {
    char cmd[600];
    pthread_mutex_lock(&k.lock);
    for (size_t i = 0; i < ELEMENTSOF(k.e); i++)
        if (k.e[i].wd > 0 && streq(k.e[i].path, path)) {
            (void)inotify_rm_watch(k.ifd, k.e[i].wd);
            k.e[i].wd = 0;
        }
    k.entries_removed++;
    pthread_mutex_unlock(&k.lock);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd) == 0 ? 0 : -EIO;
}

static const SnpTsmOps fake_ops = {fake_make_dir, fake_remove_dir, &k};

/* The kernel's side of one write to an entry's attribute. */
static void on_write(const char *dir, uint64_t *gen, const char *name) {
    char p[500];
    _cleanup_free_ uint8_t *in = NULL, *priv = NULL, *table = NULL;
    size_t in_len = 0, priv_len = 0, table_len = 0;
    uint8_t rep[SNP_REPORT_SIZE];
    int fd, r;

    if (!streq(name, "privlevel") && !streq(name, "inblob"))
        return;
    *gen += 1;
    if (streq(name, "privlevel")) {
        set_generation(dir, *gen);
        return;
    }
    *gen += k.extra_bumps;
    set_generation(dir, *gen);
    snprintf(p, sizeof p, "%s/inblob", dir);
    assert_int_equal(read_full_file(p, 4096, &in, &in_len), 0);
    snprintf(p, sizeof p, "%s/privlevel", dir);
    assert_int_equal(read_full_file(p, 4096, &priv, &priv_len), 0);
    k.last_inblob_len = in_len;
    r = in_len == 64 ? sim_chip_get_report(k.chip, in, (uint32_t)atoi((char *)priv), rep) : -EINVAL;
    if (r >= 0 && k.aux) {
        assert_int_equal(sim_chip_get_cert_table(k.chip, &table, &table_len), 0);
        write_attr(dir, "auxblob", table, table_len);
    }
    snprintf(p, sizeof p, "%s/outblob", dir);
    fd = open(p, O_WRONLY | O_CLOEXEC); /* blocks until the provider reads */
    assert_true(fd >= 0);
    if (r >= 0)
        assert_int_equal(write_all(fd, rep, sizeof rep), 0);
    close(fd);
    k.reports++;
}

static void *kernel_thread(void *arg) {
    _Alignas(struct inotify_event) char buf[4096];
    for (;;) {
        struct pollfd pfd[2] = {{k.ifd, POLLIN, 0}, {k.stop[0], POLLIN, 0}};
        ssize_t n;
        if (poll(pfd, 2, -1) < 0)
            continue;
        if (pfd[1].revents)
            return NULL;
        n = read(k.ifd, buf, sizeof buf);
        for (char *p = buf; n > 0 && p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (!(ev->mask & IN_CLOSE_WRITE) || ev->len == 0)
                continue;
            pthread_mutex_lock(&k.lock);
            for (size_t i = 0; i < ELEMENTSOF(k.e); i++)
                if (k.e[i].wd == ev->wd) {
                    char dir[400];
                    uint64_t *gen = &k.e[i].gen;
                    snprintf(dir, sizeof dir, "%s", k.e[i].path);
                    pthread_mutex_unlock(&k.lock);
                    on_write(dir, gen, ev->name);
                    pthread_mutex_lock(&k.lock);
                    break;
                }
            pthread_mutex_unlock(&k.lock);
        }
    }
}

static int group_setup(void **state) {
    SimInitOptions o = {SNP_PRODUCT_GENOA, false, 3};
    if (!mkdtemp(base))
        return -1;
    snprintf(chip_dir, sizeof chip_dir, "%s/chip", base);
    snprintf(root, sizeof root, "%s/tsm-report", base);
    if (mkdir(root, 0755) < 0)
        return -1;
    return sim_chip_init(chip_dir, &o) < 0 ? -1 : 0;
}

static int group_teardown(void **state) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state) {
    memset(&k, 0, sizeof k);
    k.provider = "sev_guest\n";
    k.aux = true;
    pthread_mutex_init(&k.lock, NULL);
    k.ifd = inotify_init1(IN_CLOEXEC);
    if (k.ifd < 0 || pipe(k.stop) < 0)
        return -1;
    if (sim_chip_load(chip_dir, &k.chip) < 0)
        return -1;
    return pthread_create(&k.thread, NULL, kernel_thread, NULL) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)!write(k.stop[1], "x", 1);
    pthread_join(k.thread, NULL);
    close(k.ifd);
    close(k.stop[0]);
    close(k.stop[1]);
    k.chip = sim_chip_free(k.chip);
    pthread_mutex_destroy(&k.lock);
    return 0;
}

static unsigned root_entries(void) {
    DIR *d = opendir(root);
    struct dirent *de;
    unsigned n = 0;
    assert_non_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void test_report(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = NULL;
    _cleanup_free_ uint8_t *rep = NULL, *certs = NULL, *table = NULL;
    uint8_t data[64];
    size_t len = 0, certs_len = 0, table_len = 0;
    SnpReport r;

    for (int i = 0; i < 64; i++)
        data[i] = (uint8_t)(255 - i);
    assert_int_equal(snp_provider_tsm_open(root, &fake_ops, &p), 0);
    assert_string_equal(snp_provider_info(p)->name, "tsm");
    assert_string_equal(snp_provider_info(p)->detail, root);
    assert_int_equal(k.entries_made, 1); /* the probe */
    assert_int_equal(k.entries_removed, 1);

    assert_int_equal(snp_provider_get_ext_report(p, data, 1, &rep, &len, &certs, &certs_len), 0);
    assert_int_equal(k.reports, 1);
    assert_int_equal(k.last_inblob_len, 64);
    assert_int_equal(len, SNP_REPORT_SIZE);
    assert_int_equal(snp_report_parse(rep, len, &r, NULL), 0);
    assert_memory_equal(r.report_data, data, 64);
    assert_int_equal(r.vmpl, 1);
    assert_int_equal(sim_chip_get_cert_table(k.chip, &table, &table_len), 0);
    assert_int_equal(certs_len, table_len);
    assert_memory_equal(certs, table, table_len);
    assert_int_equal(k.entries_removed, 2);
    assert_int_equal(root_entries(), 0);

    /* derived keys are not a configfs-tsm feature */
    {
        Secret *key = NULL;
        SnpDerivedKeyRequest req = {0};
        assert_int_equal(snp_provider_get_derived_key(p, &req, &key), -EOPNOTSUPP);
        assert_null(key);
    }
}

static void test_plain_report_without_auxblob(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = NULL;
    _cleanup_free_ uint8_t *rep = NULL, *rep2 = NULL;
    uint8_t data[64] = {1}, *certs = (uint8_t *)"x";
    size_t len = 0, certs_len = 5;

    k.aux = false;
    assert_int_equal(snp_provider_tsm_open(root, &fake_ops, &p), 0);
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep, &len), 0);
    assert_int_equal(len, SNP_REPORT_SIZE);
    assert_int_equal(snp_provider_get_ext_report(p, data, 0, &rep2, &len, &certs, &certs_len), 0);
    assert_null(certs);
    assert_int_equal(certs_len, 0);
    assert_int_equal(root_entries(), 0);
}

static void test_racing_writer(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = NULL;
    uint8_t data[64] = {2}, *rep = NULL;
    size_t len = 0;

    assert_int_equal(snp_provider_tsm_open(root, &fake_ops, &p), 0);
    k.extra_bumps = 1;
    assert_int_equal(snp_provider_get_report(p, data, 0, &rep, &len), -EBUSY);
    assert_null(rep);
    assert_int_equal(k.reports, 1);
    assert_int_equal(root_entries(), 0); /* removed on the error path too */
}

static void test_refused_vmpl(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = NULL;
    uint8_t data[64] = {2}, *rep = NULL;
    size_t len = 0;

    sim_chip_launch(k.chip)->vmpl = 2;
    assert_int_equal(snp_provider_tsm_open(root, &fake_ops, &p), 0);
    /* the "kernel" produces no report: an empty outblob */
    assert_int_equal(snp_provider_get_report(p, data, 1, &rep, &len), -EPROTO);
    assert_null(rep);
    assert_int_equal(root_entries(), 0);
}

static void test_wrong_provider_or_root(void **state) {
    SnpProvider *p = NULL;
    char missing[400];

    k.provider = "tdx_guest\n";
    assert_int_equal(snp_provider_tsm_open(root, &fake_ops, &p), -ENODEV);
    assert_null(p);
    assert_int_equal(k.entries_removed, 1);
    assert_int_equal(root_entries(), 0);
    snprintf(missing, sizeof missing, "%s/none", base);
    assert_int_equal(snp_provider_tsm_open(missing, &fake_ops, &p), -ENOENT);
    assert_int_equal(k.entries_made, 1);

    /* auto with a configfs root that does not serve sev_guest: -ENODEV, message says so */
    assert_int_equal(setenv("NITRIDE_SEV_GUEST_DEV", missing, 1), 0);
    assert_int_equal(setenv("NITRIDE_TSM_ROOT", root, 1), 0);
    assert_int_equal(snp_provider_open(NULL, NULL, &p), -ENODEV);
    assert_non_null(strstr(snp_provider_missing_message(), root));
    assert_non_null(strstr(snp_provider_missing_message(), "not usable"));
    assert_int_equal(root_entries(), 0);
    assert_int_equal(unsetenv("NITRIDE_SEV_GUEST_DEV"), 0);
    assert_int_equal(unsetenv("NITRIDE_TSM_ROOT"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_report_without_auxblob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racing_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_vmpl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_provider_or_root, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
