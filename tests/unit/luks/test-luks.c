/* SPDX-License-Identifier: Apache-2.0 */
/*
 * src/luks over real LUKS2 image files formatted here with libcryptsetup and the simulated SNP
 * chip: the token JSON round trip and its strict refusals; sealed enrolment that is atomic under
 * a failure injected at each step (no keyslot, no token left, the passphrase still opens); the
 * enrolled key opens exactly the token's keyslot (test-mode activation, no device-mapper);
 * unseal refused for another volume's UUID and for another measurement; remove restoring the
 * token when destroying the keyslot fails, and refusing the last keyslot without force.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <libcryptsetup.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "luks/luks.h"
#include "snp/sim.h"

static char tmpdir[] = "/tmp/nt-luks-unit-XXXXXX";
static char simdir[600];
static const char pass[] = "unit passphrase";

static int setup_all(void **state) {
    SimInitOptions o = {.product = SNP_PRODUCT_MILAN};
    secret_set_allow_unlocked(true);
    crypt_set_log_callback(NULL, NULL, NULL);
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(simdir, sizeof simdir, "%s/chip", tmpdir);
    return sim_chip_init(simdir, &o) < 0 ? -1 : 0;
}

static int teardown_all(void **state) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A fresh 32 MiB LUKS2 image with one PBKDF2 passphrase keyslot (slot 0). */
static void make_image(const char *name, char *path, size_t n) {
    struct crypt_device *cd = NULL;
    struct crypt_pbkdf_type pbkdf = {.type = CRYPT_KDF_PBKDF2,
                                     .hash = "sha256",
                                     .iterations = 1000,
                                     .flags = CRYPT_PBKDF_NO_BENCHMARK};
    int fd;
    snprintf(path, n, "%s/%s", tmpdir, name);
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 32 << 20), 0);
    close(fd);
    assert_int_equal(crypt_init(&cd, path), 0);
    assert_int_equal(crypt_set_pbkdf_type(cd, &pbkdf), 0);
    assert_int_equal(crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", NULL, NULL, 64, NULL), 0);
    assert_int_equal(crypt_keyslot_add_by_volume_key(cd, 0, NULL, 64, pass, strlen(pass)), 0);
    crypt_free(cd);
}

static SnpProvider *open_sim(void) {
    SnpProvider *p = NULL;
    assert_int_equal(snp_provider_open("sim", simdir, &p), 0);
    return p;
}

static Secret *auth_secret(void) {
    Secret *s = NULL;
    assert_int_equal(secret_new_copy(pass, strlen(pass), &s), 0);
    return s;
}

static int n_tokens(struct crypt_device *cd) {
    int n = 0;
    for (int i = 0; i < LUKS_MAX_TOKENS; i++)
        if (crypt_token_status(cd, i, NULL) != CRYPT_TOKEN_INACTIVE &&
            crypt_token_status(cd, i, NULL) != CRYPT_TOKEN_INVALID)
            n++;
    return n;
}

static const char *fail_at;
static int hook(const char *step) {
    return fail_at && strcmp(step, fail_at) == 0 ? -EIO : 0;
}

static void test_token_roundtrip_strict(void **state) {
    LuksToken t = {.keyslot = 3,
                   .flow = LUKS_FLOW_SEALED,
                   .root_key_select = SNP_KEY_ROOT_VCEK,
                   .guest_field_select = SNP_GFS_MEASUREMENT | SNP_GFS_GUEST_POLICY,
                   .guest_svn = 2,
                   .tcb_version = 0x0102030405060708ull,
                   .policy = {.allow_debug = false, .min_tcb = 0x1122, .min_guest_svn = 2}};
    LuksToken u;
    char *json = NULL, *bad;
    const char *err = NULL;
    static const struct {
        const char *from, *to;
        int want;
    } edits[] = {
        {"\"flow\":\"sealed\"", "\"flow\":\"sealed\",\"x\":1", -EBADMSG},
        {"[\"3\"]", "[\"3\",\"4\"]", -EBADMSG},
        {"[\"3\"]", "[\"03\"]", -EBADMSG},
        {"[\"3\"]", "[\"32\"]", -EBADMSG},
        {"[\"3\"]", "[3]", -EBADMSG},
        {"\"nitride_version\":1", "\"nitride_version\":2", -EOPNOTSUPP},
        {"\"type\":\"nitride\"", "\"type\":\"systemd-tpm2\"", -EMEDIUMTYPE},
        {"\"flow\":\"sealed\"", "\"flow\":\"kms\"", -EBADMSG},
        {"\"root_key\":\"vcek\"", "\"root_key\":\"vlek\"", -EBADMSG},
        {"\"measurement\"", "\"nonsense\"", -EBADMSG},
        {"\"allow_debug\":false", "\"allow_debug\":0", -EBADMSG},
        {"\"guest_svn\":2", "\"guest_svn\":-1", -EBADMSG},
        {"\"tcb\":\"0102030405060708\"", "\"tcb\":\"01020304050607\"", -EBADMSG},
        {"12345678-1234-1234-1234-123456789abc", "12345678-1234-1234-1234-123456789ab", -EBADMSG},
        {"\"flow\":\"sealed\"", "\"flow\":\"sealed\",\"flow\":\"sealed\"", -EBADMSG},
    };

    memcpy(t.volume, "12345678-1234-1234-1234-123456789abc", 37);
    for (size_t i = 0; i < LUKS_BLOB_SIZE; i++)
        t.blob[i] = (uint8_t)i;
    assert_int_equal(luks_token_format(&t, &json), 0);
    assert_int_equal(luks_token_parse(json, strlen(json), &u, &err), 0);
    assert_int_equal(u.keyslot, 3);
    assert_int_equal(u.flow, LUKS_FLOW_SEALED);
    assert_int_equal(u.guest_field_select, t.guest_field_select);
    assert_int_equal(u.guest_svn, 2);
    assert_int_equal(u.tcb_version, t.tcb_version);
    assert_int_equal(u.policy.min_tcb, 0x1122);
    assert_memory_equal(u.blob, t.blob, LUKS_BLOB_SIZE);
    assert_string_equal(u.volume, t.volume);
    luks_token_done(&u);

    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        const char *at = strstr(json, edits[i].from);
        size_t pre, n;
        assert_non_null(at);
        pre = (size_t)(at - json);
        n = strlen(json) - strlen(edits[i].from) + strlen(edits[i].to);
        bad = malloc(n + 1);
        assert_non_null(bad);
        memcpy(bad, json, pre);
        strcpy(bad + pre, edits[i].to);
        strcat(bad, at + strlen(edits[i].from));
        assert_int_equal(luks_token_parse(bad, strlen(bad), &u, &err), edits[i].want);
        free(bad);
    }
    /* A truncated token. */
    assert_int_equal(luks_token_parse(json, strlen(json) - 1, &u, &err), -EBADMSG);
    free(json);

    /* The KMS form round trips too. */
    t.flow = LUKS_FLOW_KMS;
    t.kms_url = strdup("https://kms.example:8443");
    t.secret_id = strdup("vol-1");
    assert_int_equal(luks_token_format(&t, &json), 0);
    assert_int_equal(luks_token_parse(json, strlen(json), &u, &err), 0);
    assert_int_equal(u.flow, LUKS_FLOW_KMS);
    assert_string_equal(u.kms_url, "https://kms.example:8443");
    assert_string_equal(u.secret_id, "vol-1");
    assert_null(u.attestd_url);
    luks_token_done(&u);
    free(json);

    /* Both slots in one token ("sealed+kms"); "sealed"/"kms" with the other member refused. */
    t.flow = LUKS_FLOW_SEALED_KMS;
    assert_int_equal(luks_token_format(&t, &json), 0);
    assert_non_null(strstr(json, "\"flow\":\"sealed+kms\""));
    assert_int_equal(luks_token_parse(json, strlen(json), &u, &err), 0);
    assert_int_equal(u.flow, LUKS_FLOW_SEALED_KMS);
    assert_string_equal(u.secret_id, "vol-1");
    assert_memory_equal(u.blob, t.blob, LUKS_BLOB_SIZE);
    luks_token_done(&u);
    {
        char *at = strstr(json, "\"flow\":\"sealed+kms\"");
        memcpy(at, "\"flow\":\"sealed\"    ", strlen("\"flow\":\"sealed+kms\""));
        assert_int_equal(luks_token_parse(json, strlen(json), &u, &err), -EBADMSG);
        assert_string_equal(err, "kms");
        memcpy(at, "\"flow\":\"kms\"       ", strlen("\"flow\":\"sealed+kms\""));
        assert_int_equal(luks_token_parse(json, strlen(json), &u, &err), -EBADMSG);
        assert_string_equal(err, "sealed");
    }
    luks_token_done(&t);
    free(json);
}

static void write_conf(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_unlock_options(void **state) {
    LuksUnlockOptions o;
    char path[700];
    static const char *const bad[] = {
        "{\"timeout_ms\":0}",
        "{\"timeout_ms\":\"5\"}",
        "{\"reseal\":1}",
        "{\"provider\":\"nope\"}",
        "{\"other\":true}",
        "{\"reseal\":true,\"reseal\":true}",
        "[]",
        "{\"provider\":\"\"}",
        "{",
    };

    snprintf(path, sizeof path, "%s/luks.conf", tmpdir);
    /* The default file missing: defaults. */
    unsetenv("NITRIDE_LUKS_CONF");
    if (access(LUKS_CONF_DEFAULT, F_OK) != 0) {
        assert_int_equal(luks_unlock_options_load(NULL, &o), 0);
        assert_int_equal(o.timeout_ms, LUKS_UNLOCK_DEFAULT_TIMEOUT_MS);
        assert_true(o.allow_remote);
        assert_true(o.reseal);
        assert_null(o.provider);
        luks_unlock_options_done(&o);
    }
    /* A named file missing: an error. */
    assert_int_equal(luks_unlock_options_load(path, &o), -ENOENT);
    setenv("NITRIDE_LUKS_CONF", path, 1);
    assert_int_equal(luks_unlock_options_load(NULL, &o), -ENOENT);
    write_conf(path, "{\"provider\":\"sim:/x\",\"ca_file\":\"/ca.pem\",\"timeout_ms\":5000,"
                     "\"allow_remote\":false,\"reseal\":false}");
    assert_int_equal(luks_unlock_options_load(NULL, &o), 0);
    assert_string_equal(o.provider, "sim:/x");
    assert_string_equal(o.ca_file, "/ca.pem");
    assert_null(o.vhsm_socket);
    assert_int_equal(o.timeout_ms, 5000);
    assert_false(o.allow_remote);
    assert_false(o.reseal);
    luks_unlock_options_done(&o);
    unsetenv("NITRIDE_LUKS_CONF");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_conf(path, bad[i]);
        o.timeout_ms = 77;
        assert_int_equal(luks_unlock_options_load(path, &o), -EBADMSG);
        assert_int_equal(o.timeout_ms, 77); /* untouched */
    }
}

static void test_unlock_sealed(void **state) {
    char path[700], spec[700];
    struct crypt_device *cd = NULL;
    SnpProvider *p = open_sim();
    Secret *auth = auth_secret(), *key = NULL;
    LuksUnlockOptions o = {.timeout_ms = 5000, .allow_remote = true, .reseal = true};
    LuksRefusal why = {0};
    int tok = -1, slot = -1, ks = -1;

    make_image("unlock.img", path, sizeof path);
    assert_int_equal(luks_device_open(path, &cd), 0);
    /* No nitride token. */
    snprintf(spec, sizeof spec, "sim:%s", simdir);
    o.provider = spec;
    assert_int_equal(luks_unlock(cd, -1, &o, &key, &ks, &why), -ENOENT);
    assert_int_equal(luks_enroll_sealed(cd, p, auth, SNP_GFS_MEASUREMENT, false, &tok, &slot, NULL),
                     0);
    assert_int_equal(luks_unlock(cd, -1, &o, &key, &ks, &why), 0);
    assert_int_equal(ks, slot);
    assert_int_equal(secret_size(key), LUKS_KEY_SIZE);
    assert_int_equal(luks_activate(cd, NULL, ks, key), 0);
    secret_free(key);
    key = NULL;
    assert_int_equal(luks_unlock(cd, tok, &o, &key, &ks, &why), 0);
    /* The keyslot's passphrase changed under the token (slot number kept). */
    assert_int_equal(crypt_keyslot_change_by_passphrase(cd, slot, slot,
                                                        (const char *)secret_const_data(key),
                                                        secret_size(key), "other", 5),
                     slot);
    secret_free(key);
    key = NULL;
    assert_int_equal(luks_unlock(cd, -1, &o, &key, &ks, &why), -EKEYREJECTED);
    assert_string_equal(why.check, "keyslot");
    assert_null(key);
    /* Another token id: none there. */
    assert_int_equal(luks_unlock(cd, tok + 1, &o, &key, &ks, &why), -ENOENT);
    /* No provider: -EAGAIN (callers fall back). */
    o.provider = (char *)"sim:/nonexistent/chip";
    assert_int_equal(luks_unlock(cd, -1, &o, &key, &ks, &why), -EAGAIN);
    assert_null(key);
    o.provider = spec;
    /* The keyslot destroyed: libcryptsetup drops it from the token, which is then malformed. */
    assert_int_equal(crypt_keyslot_destroy(cd, slot), 0);
    assert_int_equal(luks_unlock(cd, -1, &o, &key, &ks, &why), -EBADMSG);
    assert_string_equal(why.check, "token");
    assert_null(key);
    secret_free(auth);
    crypt_free(cd);
    snp_provider_free(p);
}

static void test_enroll_atomic(void **state) {
    static const char *const steps[] = {"keyslot", "sealed", "token"};
    char path[700];
    struct crypt_device *cd = NULL;
    SnpProvider *p = open_sim();
    Secret *auth = auth_secret(), *key = NULL;
    LuksToken t;
    int tok = -1, slot = -1;

    make_image("atomic.img", path, sizeof path);
    assert_int_equal(luks_device_open(path, &cd), 0);
    luks_set_fault_hook(hook);
    for (size_t i = 0; i < 3; i++) {
        fail_at = steps[i];
        assert_int_equal(
            luks_enroll_sealed(cd, p, auth, SNP_GFS_MEASUREMENT, false, &tok, &slot, NULL), -EIO);
        /* Reload from disk: nothing left behind. */
        crypt_free(cd);
        assert_int_equal(luks_device_open(path, &cd), 0);
        assert_int_equal(luks_active_keyslots(cd), 1);
        assert_int_equal(n_tokens(cd), 0);
        assert_int_equal(
            crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, pass, strlen(pass), 0), 0);
    }
    fail_at = NULL;
    assert_int_equal(luks_enroll_sealed(cd, p, auth, SNP_GFS_MEASUREMENT, false, &tok, &slot, NULL),
                     0);
    assert_int_equal(slot, 1);
    assert_int_equal(luks_active_keyslots(cd), 2);
    assert_int_equal(luks_token_read(cd, tok, &t), 0);
    assert_int_equal(t.keyslot, 1);
    assert_int_equal(luks_unseal(p, &t, crypt_get_uuid(cd), &key, NULL), 0);
    assert_int_equal(luks_activate(cd, NULL, 1, key), 0);
    /* the key opens only its own slot */
    assert_int_equal(luks_activate(cd, NULL, 0, key), -EPERM);
    /* another volume's UUID: the blob does not open */
    secret_free(key);
    key = NULL;
    assert_int_equal(luks_unseal(p, &t, "00000000-1111-2222-3333-444444444444", &key, NULL),
                     -EKEYREJECTED);
    assert_null(key);

    /* remove: keyslot destroy fails -> the token is back, keyslot intact */
    fail_at = "remove-keyslot";
    assert_int_equal(luks_remove(cd, tok, false), -EIO);
    crypt_free(cd);
    assert_int_equal(luks_device_open(path, &cd), 0);
    assert_int_equal(n_tokens(cd), 1);
    assert_int_equal(luks_active_keyslots(cd), 2);
    fail_at = NULL;
    assert_int_equal(luks_remove(cd, tok, false), 0);
    assert_int_equal(n_tokens(cd), 0);
    assert_int_equal(luks_active_keyslots(cd), 1);
    luks_set_fault_hook(NULL);
    luks_token_done(&t);
    secret_free(auth);
    crypt_free(cd);
    snp_provider_free(p);
}

static void test_wrong_auth_and_other_measurement(void **state) {
    char path[700], other[700];
    struct crypt_device *cd = NULL;
    SnpProvider *p = open_sim();
    Secret *bad = NULL, *auth = auth_secret(), *key = NULL;
    SimChip *chip = NULL;
    LuksToken t;
    LuksRefusal why = {0};
    int tok = -1, slot = -1;

    make_image("auth.img", path, sizeof path);
    assert_int_equal(luks_device_open(path, &cd), 0);
    assert_int_equal(secret_new_copy("nope", 4, &bad), 0);
    assert_int_equal(luks_enroll_sealed(cd, p, bad, SNP_GFS_MEASUREMENT, false, &tok, &slot, NULL),
                     -EPERM);
    assert_int_equal(luks_active_keyslots(cd), 1);
    assert_int_equal(n_tokens(cd), 0);
    assert_int_equal(luks_enroll_sealed(cd, p, auth, SNP_GFS_MEASUREMENT, false, &tok, &slot, NULL),
                     0);
    assert_int_equal(luks_token_read(cd, tok, &t), 0);
    snp_provider_free(p);

    /* A copy of the chip launched with another measurement. */
    snprintf(other, sizeof other, "cp -a '%s' '%s/chip2'", simdir, tmpdir);
    assert_int_equal(system(other), 0);
    snprintf(other, sizeof other, "%s/chip2", tmpdir);
    assert_int_equal(sim_chip_load(other, &chip), 0);
    sim_chip_launch(chip)->measurement[0] ^= 1;
    assert_int_equal(sim_chip_save(chip), 0);
    sim_chip_free(chip);
    assert_int_equal(snp_provider_open("sim", other, &p), 0);
    assert_int_equal(luks_unseal(p, &t, crypt_get_uuid(cd), &key, &why), -EKEYREJECTED);
    assert_string_equal(why.check, "seal");
    assert_null(key);
    luks_token_done(&t);
    secret_free(bad);
    secret_free(auth);
    crypt_free(cd);
    snp_provider_free(p);
}

/* KMS enrolment (luks_enroll_kms) with a key as the remote flow would deliver it: atomic under a
 * failure at each step, with and without the sealed slot; "sealed+kms" token. */
static void test_enroll_kms_atomic(void **state) {
    static const char *const steps[] = {"keyslot", "sealed", "token"};
    char path[700], spec[700];
    struct crypt_device *cd = NULL;
    SnpProvider *p = open_sim();
    Secret *auth = auth_secret(), *key = NULL, *got = NULL;
    LuksUnlockOptions o = {.timeout_ms = 5000, .allow_remote = false, .reseal = true};
    LuksToken t, u;
    int tok = -1, slot = -1, ks = -1;

    make_image("kms.img", path, sizeof path);
    assert_int_equal(luks_device_open(path, &cd), 0);
    assert_int_equal(secret_new(LUKS_KEY_SIZE, &key), 0);
    memset(secret_data(key), 0x5a, LUKS_KEY_SIZE);
    luks_set_fault_hook(hook);
    for (size_t i = 0; i < 3; i++) {
        fail_at = steps[i];
        t = (LuksToken){.kms_url = strdup("https://kms.test"),
                        .attestd_url = strdup("https://attestd.test"),
                        .secret_id = strdup("vol")};
        assert_int_equal(
            luks_enroll_kms(cd, auth, key, &t, p, SNP_GFS_MEASUREMENT, false, &tok, &slot, NULL),
            -EIO);
        luks_token_done(&t);
        crypt_free(cd);
        assert_int_equal(luks_device_open(path, &cd), 0);
        assert_int_equal(luks_active_keyslots(cd), 1);
        assert_int_equal(n_tokens(cd), 0);
    }
    fail_at = NULL;
    t = (LuksToken){.kms_url = strdup("https://kms.test"),
                    .attestd_url = strdup("https://attestd.test"),
                    .secret_id = strdup("vol")};
    assert_int_equal(
        luks_enroll_kms(cd, auth, key, &t, p, SNP_GFS_MEASUREMENT, false, &tok, &slot, NULL), 0);
    luks_token_done(&t);
    assert_int_equal(luks_token_read(cd, tok, &u), 0);
    assert_int_equal(u.flow, LUKS_FLOW_SEALED_KMS);
    assert_string_equal(u.secret_id, "vol");
    assert_int_equal(u.keyslot, slot);
    luks_token_done(&u);
    /* The sealed slot opens without any network (remote disabled). */
    snprintf(spec, sizeof spec, "sim:%s", simdir);
    o.provider = spec;
    assert_int_equal(luks_unlock(cd, tok, &o, &got, &ks, NULL), 0);
    assert_memory_equal(secret_const_data(got), secret_const_data(key), LUKS_KEY_SIZE);
    secret_free(got);
    luks_set_fault_hook(NULL);
    secret_free(key);
    secret_free(auth);
    crypt_free(cd);
    snp_provider_free(p);
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A TCP socket bound on 127.0.0.1: listening (connections are accepted by the kernel and never
 * answered) or not (connections are refused); the port stays ours while fd is open. */
static int loopback_port(bool listening, int *ret_fd) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    if (listening)
        assert_int_equal(listen(fd, 16), 0);
    *ret_fd = fd;
    return ntohs(sa.sin_port);
}

/* The remote path with its services down: a port that refuses connections ends the unlock with
 * -ECONNREFUSED naming the service and its URL after a few tries, well before the timeout; a
 * service that accepts and never answers (transient) is retried until the timeout, not past it. */
static void test_remote_service_down(void **state) {
    char path[700], spec[700], url[64];
    struct crypt_device *cd = NULL;
    Secret *auth = auth_secret(), *key = NULL, *got = NULL;
    LuksUnlockOptions o = {.timeout_ms = 20000, .allow_remote = true, .reseal = false};
    LuksRefusal ref = {0};
    LuksToken t;
    int tok = -1, slot = -1, ks = -1, fd_dead = -1, fd_mute = -1, port;
    int64_t t0, dt;

    make_image("down.img", path, sizeof path);
    assert_int_equal(luks_device_open(path, &cd), 0);
    assert_int_equal(secret_new(LUKS_KEY_SIZE, &key), 0);
    memset(secret_data(key), 0x3c, LUKS_KEY_SIZE);
    port = loopback_port(false, &fd_dead);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    t = (LuksToken){.kms_url = strdup(url), .attestd_url = strdup(url), .secret_id = strdup("v")};
    assert_int_equal(luks_enroll_kms(cd, auth, key, &t, NULL, 0, false, &tok, &slot, NULL), 0);
    luks_token_done(&t);
    snprintf(spec, sizeof spec, "sim:%s", simdir);
    o.provider = spec;

    t0 = mono_ms();
    assert_int_equal(luks_unlock(cd, tok, &o, &got, &ks, &ref), -ECONNREFUSED);
    dt = mono_ms() - t0;
    print_message("unlock with nothing listening at %s: %lld ms (timeout %u ms)\n", url,
                  (long long)dt, o.timeout_ms);
    assert_null(got);
    assert_non_null(ref.check);
    assert_string_equal(ref.check, "connect");
    assert_non_null(strstr(ref.detail, "attestd is down"));
    assert_non_null(strstr(ref.detail, url));
    assert_non_null(strstr(ref.detail, "refused the connection 3 times"));
    assert_true(dt < 5000);

    /* The plain errno path (no refusal out-parameter) is the same. */
    assert_int_equal(luks_unlock(cd, tok, &o, &got, &ks, NULL), -ECONNREFUSED);

    /* A service that accepts and never answers: transient, retried until the deadline. */
    close(fd_dead);
    port = loopback_port(true, &fd_mute);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    crypt_free(cd);
    cd = NULL;
    make_image("mute.img", path, sizeof path);
    assert_int_equal(luks_device_open(path, &cd), 0);
    t = (LuksToken){.kms_url = strdup(url), .attestd_url = strdup(url), .secret_id = strdup("v")};
    assert_int_equal(luks_enroll_kms(cd, auth, key, &t, NULL, 0, false, &tok, &slot, NULL), 0);
    luks_token_done(&t);
    o.timeout_ms = 1500;
    ref = (LuksRefusal){0};
    t0 = mono_ms();
    assert_int_equal(luks_unlock(cd, tok, &o, &got, &ks, &ref), -EAGAIN);
    dt = mono_ms() - t0;
    print_message("unlock with a mute service: %lld ms (timeout %u ms)\n", (long long)dt,
                  o.timeout_ms);
    assert_string_equal(ref.check, "unavailable");
    assert_true(dt >= 1000 && dt < 1500 + 1500);
    close(fd_mute);
    secret_free(key);
    secret_free(auth);
    crypt_free(cd);
}

/* A copy of the chip named name launched with measurement m. */
static void chip_copy(const char *name, const uint8_t m[48], char *out, size_t n) {
    char cmd[1600];
    SimChip *chip = NULL;
    snprintf(out, n, "%s/%s", tmpdir, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", out, simdir, out);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sim_chip_load(out, &chip), 0);
    memcpy(sim_chip_launch(chip)->measurement, m, 48);
    assert_int_equal(sim_chip_save(chip), 0);
    sim_chip_free(chip);
}

static uint8_t *read_header(const char *path) {
    uint8_t *b = malloc(16u << 20);
    FILE *f = fopen(path, "rb");
    assert_non_null(b);
    assert_non_null(f);
    assert_int_equal(fread(b, 1, 16u << 20, f), 16u << 20);
    fclose(f);
    return b;
}

/* seal --expect-measurement: the next image opens the pre-authorised slot and the token
 * re-seals to it; other images do not; a failure while pre-authorising or re-sealing leaves the
 * header byte-for-byte unchanged; an edited expected measurement does not open. */
static void test_expect_measurement(void **state) {
    char path[700], spec[800], next_dir[700], other_dir[700];
    struct crypt_device *cd = NULL;
    SnpProvider *p = open_sim();
    Secret *auth = auth_secret(), *key = NULL, *key2 = NULL;
    LuksUnlockOptions o = {.timeout_ms = 5000, .allow_remote = false, .reseal = true};
    LuksRefusal why = {0};
    LuksToken t;
    uint8_t next[48], other[48], *h0, *h1;
    int tok = -1, slot = -1, ks = -1, id = -1;

    memset(next, 0x22, sizeof next);
    memset(other, 0x33, sizeof other);
    chip_copy("chip-next", next, next_dir, sizeof next_dir);
    chip_copy("chip-other", other, other_dir, sizeof other_dir);
    make_image("expect.img", path, sizeof path);
    assert_int_equal(luks_device_open(path, &cd), 0);
    assert_int_equal(luks_enroll_sealed(cd, p, auth, SNP_GFS_MEASUREMENT | SNP_GFS_GUEST_POLICY,
                                        false, &tok, &slot, NULL),
                     0);
    snprintf(spec, sizeof spec, "sim:%s", simdir);
    o.provider = spec;
    assert_int_equal(luks_unlock(cd, tok, &o, &key, &ks, NULL), 0);

    /* A failure at the token write: nothing changes. */
    h0 = read_header(path);
    luks_set_fault_hook(hook);
    fail_at = "expect";
    assert_int_equal(luks_preauthorise(cd, tok, &o, next, &id, &why), -EIO);
    h1 = read_header(path);
    assert_memory_equal(h0, h1, 16u << 20);
    free(h1);
    fail_at = NULL;
    assert_int_equal(luks_preauthorise(cd, tok, &o, next, &id, &why), 0);
    assert_int_equal(id, tok);
    assert_int_equal(luks_token_read(cd, tok, &t), 0);
    assert_true(t.has_expect);
    assert_memory_equal(t.expect_measurement, next, 48);
    assert_int_equal(t.expect_field_select, SNP_GFS_GUEST_POLICY);
    luks_token_done(&t);
    /* Still opens here (the sealed slot is untouched). */
    assert_int_equal(luks_unlock(cd, tok, &o, &key2, &ks, NULL), 0);
    key2 = secret_free(key2);

    /* Another image: neither slot opens; header unchanged. */
    free(h0);
    h0 = read_header(path);
    snprintf(spec, sizeof spec, "sim:%s", other_dir);
    assert_int_equal(luks_unlock(cd, tok, &o, &key2, &ks, &why), -EKEYREJECTED);
    assert_null(key2);
    h1 = read_header(path);
    assert_memory_equal(h0, h1, 16u << 20);
    free(h1);

    /* The pre-authorised image, re-seal failing: unlocked, token unchanged. */
    snprintf(spec, sizeof spec, "sim:%s", next_dir);
    fail_at = "reseal";
    assert_int_equal(luks_unlock(cd, tok, &o, &key2, &ks, &why), 0);
    assert_memory_equal(secret_const_data(key2), secret_const_data(key), LUKS_KEY_SIZE);
    key2 = secret_free(key2);
    h1 = read_header(path);
    assert_memory_equal(h0, h1, 16u << 20);
    free(h1);
    fail_at = NULL;
    /* ... and succeeding: re-sealed to the new image, the expect slot used up. */
    assert_int_equal(luks_unlock(cd, tok, &o, &key2, &ks, &why), 0);
    key2 = secret_free(key2);
    assert_int_equal(luks_token_read(cd, tok, &t), 0);
    assert_false(t.has_expect);
    luks_token_done(&t);
    /* Sealed now: opens in the new image by the main slot; the old one no longer opens. */
    assert_int_equal(luks_unlock(cd, tok, &o, &key2, &ks, &why), 0);
    key2 = secret_free(key2);
    snprintf(spec, sizeof spec, "sim:%s", simdir);
    assert_int_equal(luks_unlock(cd, tok, &o, &key2, &ks, &why), -EKEYREJECTED);

    /* An edited expected measurement does not open (authenticated). */
    assert_int_equal(luks_preauthorise(cd, tok, &o, next, &id, &why), -EKEYREJECTED);
    snprintf(spec, sizeof spec, "sim:%s", next_dir);
    assert_int_equal(luks_preauthorise(cd, tok, &o, other, &id, &why), 0);
    {
        const char *json = NULL;
        char *edited, *at, hx[97];
        assert_true(crypt_token_json_get(cd, tok, &json) >= 0);
        edited = strdup(json);
        assert_non_null(edited);
        memset(hx, '3', 96);
        hx[96] = 0;
        at = strstr(edited, hx);
        assert_non_null(at);
        memset(at, '4', 96);
        assert_true(crypt_token_json_set(cd, tok, edited) >= 0);
        free(edited);
        memset(other, 0x44, sizeof other);
        chip_copy("chip-other", other, other_dir, sizeof other_dir);
        snprintf(spec, sizeof spec, "sim:%s", other_dir);
        assert_int_equal(luks_unlock(cd, tok, &o, &key2, &ks, &why), -EKEYREJECTED);
        assert_null(key2);
    }
    luks_set_fault_hook(NULL);
    free(h0);
    secret_free(key);
    secret_free(auth);
    crypt_free(cd);
    snp_provider_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_roundtrip_strict),
        cmocka_unit_test(test_enroll_atomic),
        cmocka_unit_test(test_wrong_auth_and_other_measurement),
        cmocka_unit_test(test_unlock_options),
        cmocka_unit_test(test_unlock_sealed),
        cmocka_unit_test(test_enroll_kms_atomic),
        cmocka_unit_test(test_remote_service_down),
        cmocka_unit_test(test_expect_measurement),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
