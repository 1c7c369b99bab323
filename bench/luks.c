/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-luks: time from "unlock this volume" to an opened keyslot, on the host in test mode (no
 * device-mapper here: the keyslot is opened with libcryptsetup's activation without a name),
 * for Nitride's sealed flow next to Clevis with a Tang server on loopback, in the same run, on
 * equal images (32 MiB LUKS2, slot 0 a passphrase slot with argon2id, the unlock method's own
 * slot PBKDF2 as both tools make it). Methods, each one a whole unlock as an operator or boot
 * runs it:
 *   cryptsetup  `cryptsetup open --token-only --test-passphrase IMG` through
 *               libcryptsetup-token-nitride.so (the crypttab / initramfs path). The plugin is
 *               bind-mounted over libcryptsetup's token directory in this process's private mount
 *               namespace (root only; the machine is not changed).
 *   nitride     `nitride luks unlock IMG NAME --test` (the CLI).
 *   in-process  luks_device_open + luks_unlock + luks_activate(test) in this process (the floor).
 *   clevis      `clevis luks pass -d IMG -s SLOT | cryptsetup open --test-passphrase -S SLOT IMG
 *               --key-file -`: Clevis with the slot named (clevis luks unlock cannot run without
 *               device-mapper; this is its unlock minus the dm table load), Tang behind socat.
 * The remote (KMS) flow, the same three ways, on a volume enrolled with `nitride luks enroll
 * --create`: nitride-attestd and nitride-kmsd over TLS on loopback (throwaway CA), the whole
 * attestation (challenge, report, token) and release per unlock, no cache.
 * NT_BENCH_ROUNDS rounds (default 3) of NT_BENCH_LUKS unlocks per method (default 20), methods
 * interleaved per round; medians per round and overall, ratios to Clevis.
 * Targets (issue 11): sealed < 50 ms, remote < 100 ms, both faster than Clevis+Tang (checked on
 * the cryptsetup and nitride paths). Exit 1 when missed.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <fcntl.h>
#include <libcryptsetup.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/secret.h"
#include "luks/luks.h"
#include "snp/sim.h"

#define TARGET_SEALED_MS 50.0
#define TARGET_REMOTE_MS 100.0

static char tmpdir[] = "/tmp/nt-bench-luks-XXXXXX";

static void tmp_path(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* A 32 MiB LUKS2 image whose slot 0 is an argon2id passphrase slot (cheap parameters, so the
 * setup is quick, yet a method that tried it would show ~100 ms). */
static void make_image(const char *img) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "truncate -s 32M '%s' && printf 'bench-passphrase' | cryptsetup luksFormat --type "
             "luks2 --batch-mode --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory "
             "32768 --pbkdf-parallel 1 '%s' - >/dev/null",
             img, img);
    bench_run(cmd);
}

typedef enum Method {
    M_CRYPTSETUP,
    M_NITRIDE,
    M_INPROC,
    M_R_CRYPTSETUP,
    M_R_NITRIDE,
    M_R_INPROC,
    M_CLEVIS,
    M_MAX,
} Method;

static const char *method_names[M_MAX] = {
    [M_CRYPTSETUP] = "sealed: cryptsetup --token-only (plugin)",
    [M_NITRIDE] = "sealed: nitride luks unlock --test",
    [M_INPROC] = "sealed: in-process luks_unlock (floor)",
    [M_R_CRYPTSETUP] = "remote: cryptsetup --token-only (plugin)",
    [M_R_NITRIDE] = "remote: nitride luks unlock --test",
    [M_R_INPROC] = "remote: in-process luks_unlock",
    [M_CLEVIS] = "clevis+tang: luks pass -s | cryptsetup -S",
};

static char cmds[M_MAX][2048];
static bool enabled[M_MAX];
static char sealed_img[512], remote_img[512];

static double one_inproc(const char *img) {
    _cleanup_(luks_device_closep) struct crypt_device *cd = NULL;
    _cleanup_(secret_freep) Secret *key = NULL;
    LuksUnlockOptions o = {0};
    LuksRefusal refusal = {0};
    int keyslot = -1;
    double t0 = bench_mono();
    if (luks_unlock_options_load(NULL, &o) < 0 || luks_device_open(img, &cd) < 0 ||
        luks_unlock(cd, -1, &o, &key, &keyslot, &refusal) < 0 ||
        luks_activate(cd, NULL, keyslot, key) < 0)
        bench_die("in-process unlock");
    luks_unlock_options_done(&o);
    return bench_mono() - t0;
}

static double one(Method m) {
    if (m == M_INPROC || m == M_R_INPROC)
        return one_inproc(m == M_INPROC ? sealed_img : remote_img);
    double t0 = bench_mono();
    if (system(cmds[m]) != 0) {
        fprintf(stderr, "bench-luks: %s\n", cmds[m]);
        bench_die(method_names[m]);
    }
    return bench_mono() - t0;
}

/* Tang behind socat on a free loopback port; returns the port. */
static unsigned start_tang(void) {
    char db[512], port_file[512];
    tmp_path(db, sizeof db, "tang-db");
    tmp_path(port_file, sizeof port_file, "tang.port");
    return bench_start_tang(db, port_file, NULL);
}

/* The plugin in place of libcryptsetup's token directory, for this process and its children
 * only (a private mount namespace). */
static bool plugin_namespace(void) {
    const char *tokdir = crypt_token_external_path();
    char dir[512], cmd[1200];
    if (!tokdir)
        return false;
    tmp_path(dir, sizeof dir, "plugins");
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s' '%s/'", dir, PLUGIN_PATH, dir);
    bench_run(cmd);
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount(dir, tokdir, NULL, MS_BIND, NULL) < 0) {
        printf("cryptsetup path: not measured (cannot bind-mount the plugin over %s: %s)\n", tokdir,
               strerror(errno));
        return false;
    }
    return true;
}

/* ---- the remote flow: attestd and kmsd over TLS on loopback ---- */

static void write_json(const char *name, json_t *j) {
    char path[512];
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (!text)
        bench_die("json");
    tmp_path(path, sizeof path, name);
    bench_write_text(path, text, 0600);
    free(text);
    json_decref(j);
}

static void write_random_file(const char *name, char *path, size_t size, bool hex) {
    uint8_t k[32];
    char text[65];
    int fd;
    if (RAND_bytes(k, sizeof k) != 1)
        bench_die("RAND_bytes");
    tmp_path(path, size, name);
    if (hex) {
        hex_encode(k, sizeof k, text);
        bench_write_text(path, text, 0600);
        return;
    }
    fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    if (fd < 0 || write(fd, k, sizeof k) != (ssize_t)sizeof k)
        bench_die(name);
    close(fd);
}

static unsigned start_service(const char *exe, const char *name) {
    pid_t pid;
    return bench_start_service(tmpdir, exe, name, &pid);
}

/* attestd and kmsd, then `nitride luks enroll --create` of remote_img. Returns false (with a
 * note) when the remote flow cannot be set up. */
static bool setup_remote(const char *chip, const char *kf, const char *ca) {
    char cert[512], key[512], chal[512], pol[512], keys[512], db[512], kek[512], rkeys[512],
        jwks[512], tok[512], attestd_url[128], kms_url[128], cmd[4096];
    char anchor2[600];
    SimChip *c = NULL;
    char meas[97];

    if (sim_chip_load(chip, &c) < 0)
        bench_die("sim chip");
    hex_encode(sim_chip_launch(c)->measurement, 48, meas);
    sim_chip_free(c);
    bench_make_tls(tmpdir);
    tmp_path(cert, sizeof cert, "tls.pem");
    tmp_path(key, sizeof key, "tls.key");
    write_random_file("challenge.key", chal, sizeof chal, true);
    tmp_path(pol, sizeof pol, "att-policy.json");
    write_json("att-policy.json", json_pack("{s[s]}", "measurements", meas));
    tmp_path(keys, sizeof keys, "att-keys");
    snprintf(anchor2, sizeof anchor2, "%s/ark.pem", chip);
    write_json("attestd.json",
               json_pack("{ss s{ss ss} s{ss si} s{ss ss ss si} s[s] s{s{ss}} ss s{si si}}",
                         "listen", "127.0.0.1:0", "tls", "cert", cert, "key", key, "challenge",
                         "secret", chal, "lifetime", 60, "token", "keys_dir", keys, "issuer",
                         "https://attestd.bench", "audience", "nitride-kmsd", "lifetime", 300,
                         "trust_anchors", anchor2, "policies", "default", "file", pol,
                         "default_policy", "default", "rate_limit", "per_second", 0, "burst", 1));
    snprintf(attestd_url, sizeof attestd_url, "https://127.0.0.1:%u",
             start_service(ATTESTD_PATH, "attestd"));
    write_random_file("admin.token", tok, sizeof tok, true);
    write_random_file("kek", kek, sizeof kek, false);
    tmp_path(db, sizeof db, "kmsd.db");
    tmp_path(rkeys, sizeof rkeys, "release-keys");
    snprintf(jwks, sizeof jwks, "%s/.well-known/jwks.json", attestd_url);
    write_json("kmsd.json",
               json_pack("{ss s{ss ss} ss ss s{ss} s{ss ss ss ss si} s{ss} s{si si}}", "listen",
                         "127.0.0.1:0", "tls", "cert", cert, "key", key, "database", db, "kek_file",
                         kek, "release", "keys_dir", rkeys, "attestd", "jwks_url", jwks, "ca_file",
                         ca, "issuer", "https://attestd.bench", "audience", "nitride-kmsd", "skew",
                         1, "admin", "bearer_token_file", tok, "rate_limit", "per_second", 0,
                         "burst", 1));
    snprintf(kms_url, sizeof kms_url, "https://127.0.0.1:%u", start_service(KMSD_PATH, "kmsd"));

    tmp_path(remote_img, sizeof remote_img, "remote.img");
    make_image(remote_img);
    snprintf(cmd, sizeof cmd,
             "NITRIDE_LUKS_CONF= '%s' luks enroll '%s' --kms '%s' --attestd '%s' --secret "
             "bench-vol --create --admin-token-file '%s' --provider sim --sim-dir '%s' --ca '%s' "
             "--key-file '%s' >/dev/null",
             NITRIDE_PATH, remote_img, kms_url, attestd_url, tok, chip, ca, kf);
    if (system(cmd) != 0) {
        printf("remote flow: not measured (nitride luks enroll failed: %s)\n", cmd);
        return false;
    }
    return true;
}

int main(void) {
    int rounds = 3, runs = 20;
    const char *e;
    char chip[512], conf[512], kf[512], ca[512], clevis_img[512], cmd[2048];
    double all[M_MAX][4096];
    size_t n_all[M_MAX] = {0};
    double round_med[M_MAX][64];
    int fail = 0;

    bench_name = "bench-luks";
    if ((e = getenv("NT_BENCH_ROUNDS")) && atoi(e) >= 1 && atoi(e) <= 64)
        rounds = atoi(e);
    if ((e = getenv("NT_BENCH_LUKS")) && atoi(e) >= 3 && atoi(e) <= 4096 / 64)
        runs = atoi(e);
    if (!bench_have("cryptsetup")) {
        printf("bench-luks: skipped: cryptsetup missing (scripts/deps.sh)\n");
        return 0;
    }
    log_set_max_level(LOG_ERR);
    secret_set_allow_unlocked(true);
    if (!mkdtemp(tmpdir))
        bench_die("mkdtemp");

    /* The simulated chip and the plugin's configuration (the simulator as evidence provider). */
    tmp_path(chip, sizeof chip, "chip");
    SimInitOptions so = {.product = SNP_PRODUCT_GENOA};
    if (sim_chip_init(chip, &so) < 0)
        bench_die("sim chip");
    tmp_path(ca, sizeof ca, "ca.pem");
    tmp_path(conf, sizeof conf, "luks.conf");
    {
        json_t *j = json_pack("{ss ss}", "provider", "sim", "ca_file", ca);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (!text)
            bench_die("luks.conf");
        bench_write_text(conf, text, 0600);
        free(text);
        json_decref(j);
    }
    setenv("NITRIDE_SIM_DIR", chip, 1);
    setenv("NITRIDE_LUKS_CONF", conf, 1);
    tmp_path(kf, sizeof kf, "passphrase");
    bench_write_text(kf, "bench-passphrase", 0600);

    /* Equal images: one sealed by nitride, one bound by clevis to tang. */
    tmp_path(sealed_img, sizeof sealed_img, "sealed.img");
    make_image(sealed_img);
    snprintf(cmd, sizeof cmd,
             "'%s' luks seal '%s' --bind measurement,policy --key-file '%s' --sim-dir '%s' "
             ">/dev/null",
             NITRIDE_PATH, sealed_img, kf, chip);
    bench_run(cmd);

    enabled[M_INPROC] = true;
    enabled[M_NITRIDE] = true;
    snprintf(cmds[M_NITRIDE], sizeof cmds[M_NITRIDE],
             "'%s' luks unlock '%s' bench --test --sim-dir '%s' >/dev/null 2>&1", NITRIDE_PATH,
             sealed_img, chip);
    if (geteuid() == 0 && plugin_namespace()) {
        enabled[M_CRYPTSETUP] = true;
        snprintf(cmds[M_CRYPTSETUP], sizeof cmds[M_CRYPTSETUP],
                 "cryptsetup open --token-only --test-passphrase '%s'", sealed_img);
    } else if (geteuid() != 0)
        printf("cryptsetup path: not measured (needs root for the private mount namespace)\n");

    if (setup_remote(chip, kf, ca)) {
        enabled[M_R_INPROC] = true;
        enabled[M_R_NITRIDE] = true;
        snprintf(cmds[M_R_NITRIDE], sizeof cmds[M_R_NITRIDE],
                 "'%s' luks unlock '%s' bench --test --provider sim --sim-dir '%s' --ca '%s' "
                 ">/dev/null 2>&1",
                 NITRIDE_PATH, remote_img, chip, ca);
        if (enabled[M_CRYPTSETUP]) {
            enabled[M_R_CRYPTSETUP] = true;
            snprintf(cmds[M_R_CRYPTSETUP], sizeof cmds[M_R_CRYPTSETUP],
                     "cryptsetup open --token-only --test-passphrase '%s'", remote_img);
        }
    }

    if (bench_have("clevis") && bench_have("socat") && access(BENCH_TANGD, X_OK) == 0 &&
        system("clevis luks pass 2>&1 | grep -q 'Usage'") == 0) {
        unsigned port = start_tang();
        tmp_path(clevis_img, sizeof clevis_img, "clevis.img");
        make_image(clevis_img);
        snprintf(
            cmd, sizeof cmd,
            "clevis luks bind -y -s 1 -k '%s' -d '%s' tang '{\"url\":\"http://127.0.0.1:%u\"}' "
            ">/dev/null 2>&1",
            kf, clevis_img, port);
        for (int i = 0; system(cmd) != 0; i++) {
            if (i > 50)
                bench_die("clevis luks bind");
            usleep(100000);
        }
        enabled[M_CLEVIS] = true;
        snprintf(cmds[M_CLEVIS], sizeof cmds[M_CLEVIS],
                 "clevis luks pass -d '%s' -s 1 | cryptsetup open --test-passphrase --key-slot 1 "
                 "'%s' --key-file -",
                 clevis_img, clevis_img);
    } else
        printf("clevis: not measured (clevis, clevis-luks, tang or socat missing: run "
               "scripts/deps.sh)\n");

    /* Warm-up (page cache, first tang key fetch, kmsd's JWKS cache), then the rounds. */
    for (int m = 0; m < M_MAX; m++)
        if (enabled[m])
            (void)one((Method)m);
    for (int r = 0; r < rounds; r++) {
        double v[M_MAX][64];
        for (int i = 0; i < runs; i++)
            for (int m = 0; m < M_MAX; m++)
                if (enabled[m]) {
                    v[m][i] = one((Method)m);
                    all[m][n_all[m]++] = v[m][i];
                }
        for (int m = 0; m < M_MAX; m++)
            if (enabled[m])
                round_med[m][r] = bench_median(v[m], (size_t)runs);
    }

    printf("bench-luks: time to an opened keyslot (host, test mode), %d rounds x %d unlocks, "
           "medians\n",
           rounds, runs);
    double clevis = enabled[M_CLEVIS] ? bench_median(all[M_CLEVIS], n_all[M_CLEVIS]) : 0;
    for (int m = 0; m < M_MAX; m++) {
        if (!enabled[m])
            continue;
        double med = bench_median(all[m], n_all[m]);
        double p90 = bench_percentile(all[m], n_all[m], 90);
        printf("  %-44s %7.1f ms (p90 %6.1f ms; rounds:", method_names[m], med * 1e3, p90 * 1e3);
        for (int r = 0; r < rounds; r++)
            printf(" %.1f", round_med[m][r] * 1e3);
        printf(")");
        if (clevis > 0 && m != M_CLEVIS)
            printf("  %.1fx faster than clevis+tang", clevis / med);
        printf("\n");
        if (m == M_CRYPTSETUP || m == M_NITRIDE || m == M_R_CRYPTSETUP || m == M_R_NITRIDE) {
            double target =
                m == M_CRYPTSETUP || m == M_NITRIDE ? TARGET_SEALED_MS : TARGET_REMOTE_MS;
            if (med * 1e3 >= target) {
                printf("  MISSED: %s: %.1f ms >= %.0f ms\n", method_names[m], med * 1e3, target);
                fail = 1;
            }
            if (clevis > 0 && med >= clevis) {
                printf("  MISSED: %s not faster than clevis+tang\n", method_names[m]);
                fail = 1;
            }
        }
    }
    bench_stop_all();
    bench_remove_tree(tmpdir);
    return fail;
}
