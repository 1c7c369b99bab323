/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sealed keystore tests over the simulated SNP firmware: content round trip (every key type,
 * versions, retired versions, ACLs, policies, labels), sealing round trip through the provider,
 * a different launch measurement refusing the file, tamper and truncation refused and never
 * overwritten, persist failures undoing the mutation, malformed content refused with the vault
 * unchanged, and a crash loop (SIGKILL during rotations) that must always leave a readable file.
 * Freshness (issue 8): the generation increments at every write, a format-1 file (sealed here by
 * an independent implementation of the old format) reads as generation 0, a file older than the
 * anchor (or a deleted one) is refused and accepted only with an override of exactly its
 * generation, after which the newer files stay refused; forged and tampered anchors are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <poll.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/bytes.h"
#include "core/fileio.h"
#include "snp/provider.h"
#include "snp/sim.h"
#include "vhsm/keystore.h"
#include "vhsm/vault.h"
#include "vault-test-util.h"

static char tmpdir[] = "/tmp/nt-keystore-XXXXXX";
static char simdir[512];

static int setup_all(void **state) {
    SimInitOptions o = {.product = SNP_PRODUCT_MILAN};
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(simdir, sizeof simdir, "%s/chip", tmpdir);
    return sim_chip_init(simdir, &o) < 0 ? -1 : 0;
}

static int teardown_all(void **state) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static SnpProvider *open_sim(void) {
    SnpProvider *p = NULL;
    assert_int_equal(snp_provider_open("sim", simdir, &p), 0);
    return p;
}

static void path_of(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
    (void)unlink(buf);
}

/* A vault with some of everything: rotations, a retired version, ACL, attested policy. */
static void populate(Vault *v) {
    VaultAcl acl = {0};
    VaultKeySpec spec = {.type = VAULT_KEY_AES256, .label = "disk"};
    assert_int_equal(vault_key_generate(v, &alice, "aes", &spec), 0);
    assert_int_equal(vault_key_rotate(v, &alice, "aes", NULL), 0);
    assert_int_equal(vault_key_rotate(v, &alice, "aes", NULL), 0);
    assert_int_equal(vault_key_set_min_version(v, &alice, "aes", 2), 0);
    assert_int_equal(vault_acl_list_add_uid(&acl.use, 1000), 0);
    assert_int_equal(vault_acl_list_add_gid(&acl.use, 44), 0);
    assert_int_equal(vault_acl_list_add_cgroup(&acl.use, "/system.slice/app.service"), 0);
    assert_int_equal(vault_acl_list_add_uid(&acl.admin, 1000), 0);
    spec = (VaultKeySpec){
        .type = VAULT_KEY_EC_P384, .acl = &acl, .policy = {VAULT_POLICY_ATTESTED, 600}};
    assert_int_equal(vault_key_generate(v, &alice, "ec", &spec), 0);
    vault_acl_done(&acl);
    spec = (VaultKeySpec){.type = VAULT_KEY_HMAC_SHA384};
    assert_int_equal(vault_key_generate(v, &alice, "mac", &spec), 0);
    spec = (VaultKeySpec){.type = VAULT_KEY_ED25519};
    assert_int_equal(vault_key_generate(v, &alice, "ed", &spec), 0);
    spec = (VaultKeySpec){.type = VAULT_KEY_RSA2048};
    assert_int_equal(vault_key_generate(v, &alice, "rsa", &spec), 0);
    assert_int_equal(vault_key_rotate(v, &alice, "rsa", NULL), 0);
    spec = (VaultKeySpec){.type = VAULT_KEY_EC_P256};
    assert_int_equal(vault_key_generate(v, &alice, "gone", &spec), 0);
    assert_int_equal(vault_key_delete(v, &alice, "gone"), 0);
}

/* Same keys, same metadata, and the keys work across the two vaults. */
static void assert_same(Vault *a, Vault *b) {
    json_auto_t *la = NULL, *lb = NULL;
    size_t i;
    json_t *n;
    assert_int_equal(vault_key_list(a, &alice, &la), 0);
    assert_int_equal(vault_key_list(b, &alice, &lb), 0);
    assert_true(json_equal(la, lb));
    json_array_foreach(la, i, n) {
        json_auto_t *da = NULL, *db = NULL;
        assert_int_equal(vault_key_describe(a, &alice, json_string_value(n), &da), 0);
        assert_int_equal(vault_key_describe(b, &alice, json_string_value(n), &db), 0);
        assert_true(json_equal(da, db));
    }
    {
        _cleanup_free_ uint8_t *ct = NULL, *sig = NULL;
        _cleanup_(secret_freep) Secret *pt = NULL;
        size_t cl = 0, sl = 0;
        VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
        VaultOp sop = {.alg = VAULT_ALG_RSA_PSS_SHA256};
        assert_int_equal(vault_encrypt(a, &alice, "aes", &op, (const uint8_t *)"x", 1, &ct, &cl),
                         0);
        assert_int_equal(vault_decrypt(b, &alice, "aes", &op, ct, cl, &pt), 0);
        assert_int_equal(vault_sign(a, &alice, "rsa", &sop, (const uint8_t *)"m", 1, &sig, &sl), 0);
        assert_int_equal(vault_verify(b, &alice, "rsa", &sop, (const uint8_t *)"m", 1, sig, sl), 0);
    }
}

static void test_content_roundtrip(void **state) {
    _cleanup_(vault_freep) Vault *a = NULL, *b = NULL, *c = NULL;
    _cleanup_(secret_freep) Secret *s = NULL, *s2 = NULL;
    assert_int_equal(vault_new(&a), 0);
    assert_int_equal(vault_new(&b), 0);
    assert_int_equal(vault_new(&c), 0);
    populate(a);
    assert_int_equal(keystore_serialize(a, &s), 0);
    assert_int_equal(keystore_deserialize(b, secret_const_data(s), secret_size(s)), 0);
    assert_int_equal(vault_key_count(b), 5);
    assert_same(a, b);
    /* Deterministic: re-serializing the copy gives the same bytes. */
    assert_int_equal(keystore_serialize(b, &s2), 0);
    assert_int_equal(secret_size(s), secret_size(s2));
    assert_memory_equal(secret_data(s), secret_data(s2), secret_size(s));
    /* Into a non-empty vault: refused. */
    assert_int_equal(keystore_deserialize(b, secret_const_data(s), secret_size(s)), -EBUSY);

    /* Every truncation and a trailing byte are refused; the vault stays empty. */
    for (size_t n = 0; n < secret_size(s); n += (n < 200 ? 1 : 97)) {
        int r = keystore_deserialize(c, secret_const_data(s), n);
        assert_true(r == -EBADMSG);
        assert_int_equal(vault_key_count(c), 0);
    }
    {
        _cleanup_free_ uint8_t *longer = malloc(secret_size(s) + 1);
        memcpy(longer, secret_data(s), secret_size(s));
        longer[secret_size(s)] = 0;
        assert_int_equal(keystore_deserialize(c, longer, secret_size(s) + 1), -EBADMSG);
        /* Bit flips: refused or accepted as a consistent vault, never a crash. */
        for (size_t i = 0; i < secret_size(s); i += 7) {
            _cleanup_(vault_freep) Vault *d = NULL;
            assert_int_equal(vault_new(&d), 0);
            longer[i] ^= 0x41;
            (void)keystore_deserialize(d, longer, secret_size(s));
            longer[i] ^= 0x41;
        }
    }
    assert_int_equal(vault_key_count(c), 0);
}

static void test_sealed_roundtrip_and_undo(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = open_sim();
    _cleanup_(keystore_freep) Keystore *ks = NULL, *ks2 = NULL, *bad = NULL;
    _cleanup_(vault_freep) Vault *a = NULL, *b = NULL;
    char path[600];
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};

    path_of(path, sizeof path, "sealed.ks");
    assert_int_equal(vault_new(&a), 0);
    assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
    assert_int_equal(keystore_save(ks, a), -ESTALE); /* not loaded yet */
    assert_int_equal(keystore_load(ks, a), -ENOENT);
    vault_set_keystore(a, ks);
    populate(a);
    {
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    assert_int_equal(vault_new(&b), 0);
    assert_int_equal(keystore_new(p, path, NULL, &ks2), 0);
    assert_int_equal(keystore_load(ks2, b), 0);
    assert_same(a, b);
    assert_int_equal(keystore_load(ks2, b), -EBUSY);

    /* A persist failure undoes the mutation: unwritable location. */
    {
        _cleanup_(vault_freep) Vault *c = NULL;
        char badpath[700];
        snprintf(badpath, sizeof badpath, "%s/missing-dir/x.ks", tmpdir);
        assert_int_equal(vault_new(&c), 0);
        assert_int_equal(keystore_new(p, badpath, NULL, &bad), 0);
        assert_int_equal(keystore_load(bad, c), -ENOENT);
        vault_set_keystore(c, bad);
        assert_true(vault_key_generate(c, &alice, "k", &spec) < 0);
        assert_int_equal(vault_key_count(c), 0);
        vault_set_keystore(c, NULL);
        assert_int_equal(vault_key_generate(c, &alice, "k", &spec), 0);
        vault_set_keystore(c, bad);
        assert_true(vault_key_rotate(c, &alice, "k", NULL) < 0);
        assert_true(vault_key_delete(c, &alice, "k") < 0);
        assert_int_equal(vault_key_count(c), 1);
        {
            json_auto_t *d = NULL;
            assert_int_equal(vault_key_describe(c, &alice, "k", &d), 0);
            assert_int_equal(json_integer_value(json_object_get(d, "latest_version")), 1);
        }
        vault_set_keystore(c, NULL);
    }
}

static int read_file(const char *path, uint8_t **buf, size_t *len) {
    return read_full_file(path, 1 << 24, buf, len);
}

/* The two-slot file, written independently of keystore.c (docs/vault.md "Keystore file"):
 * "NTKD" | u16 1 | u16 16 | u32 capacity | u32 0, then two slots { u32 len | image | zeros }. */
static uint8_t *make_slots(const uint8_t *img0, size_t len0, const uint8_t *img1, size_t len1,
                           size_t cap, size_t *ret_len) {
    size_t n = 16 + 2 * (4 + cap);
    uint8_t *f = calloc(1, n);
    assert_non_null(f);
    assert_true(len0 <= cap && len1 <= cap);
    memcpy(f, "NTKD", 4);
    bytes_put_be16(f + 4, 1);
    bytes_put_be16(f + 6, 16);
    bytes_put_be32(f + 8, (uint32_t)cap);
    bytes_put_be32(f + 16, (uint32_t)len0);
    if (len0)
        memcpy(f + 20, img0, len0);
    bytes_put_be32(f + 16 + 4 + cap, (uint32_t)len1);
    if (len1)
        memcpy(f + 16 + 8 + cap, img1, len1);
    *ret_len = n;
    return f;
}

/* The slot (0 or 1) of the file's newest valid image, its generation and a copy of the image;
 * -1 when no slot opens. */
static int newest_slot(SnpProvider *p, const uint8_t *file, size_t len, uint64_t *ret_gen,
                       uint8_t **ret_img, size_t *ret_img_len) {
    const uint8_t *img[2];
    size_t n[2], cap = 0;
    int err[2], best = -1;
    uint64_t gen[2] = {0, 0};
    KeystoreSealParams prm;
    keystore_seal_params_default(&prm);
    assert_int_equal(keystore_slots_parse(file, len, img, n, err, &cap), 0);
    for (int i = 0; i < 2; i++) {
        _cleanup_(secret_freep) Secret *c = NULL;
        if (img[i] && keystore_unseal(p, &prm, img[i], n[i], &c, &gen[i]) == 0 &&
            (best < 0 || gen[i] > gen[best]))
            best = i;
    }
    if (best >= 0) {
        if (ret_gen)
            *ret_gen = gen[best];
        if (ret_img) {
            *ret_img = malloc(n[best]);
            assert_non_null(*ret_img);
            memcpy(*ret_img, img[best], n[best]);
            *ret_img_len = n[best];
        }
    }
    return best;
}

static void test_wrong_measurement_and_tamper(void **state) {
    _cleanup_(vault_freep) Vault *a = NULL;
    _cleanup_(keystore_freep) Keystore *ks = NULL;
    _cleanup_free_ uint8_t *orig = NULL;
    size_t olen = 0;
    char path[600];
    SnpProvider *p = open_sim();

    path_of(path, sizeof path, "measured.ks");
    assert_int_equal(vault_new(&a), 0);
    assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
    assert_int_equal(keystore_load(ks, a), -ENOENT);
    vault_set_keystore(a, ks);
    populate(a);
    vault_set_keystore(a, NULL);
    ks = keystore_free(ks);
    p = snp_provider_free(p);
    assert_int_equal(read_file(path, &orig, &olen), 0);

    /* Another VM (different launch measurement) on the same chip. */
    {
        _cleanup_(sim_chip_freep) SimChip *chip = NULL;
        _cleanup_(vault_freep) Vault *b = NULL;
        _cleanup_free_ uint8_t *after = NULL;
        size_t alen = 0;
        assert_int_equal(sim_chip_load(simdir, &chip), 0);
        sim_chip_launch(chip)->measurement[0] ^= 0xff;
        assert_int_equal(sim_chip_save(chip), 0);
        p = open_sim();
        assert_int_equal(vault_new(&b), 0);
        assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
        assert_int_equal(keystore_load(ks, b), -EKEYREJECTED);
        assert_int_equal(vault_key_count(b), 0);
        /* The daemon cannot overwrite what it could not open. */
        assert_int_equal(keystore_save(ks, b), -ESTALE);
        assert_int_equal(read_file(path, &after, &alen), 0);
        assert_int_equal(alen, olen);
        assert_memory_equal(after, orig, olen);
        ks = keystore_free(ks);
        p = snp_provider_free(p);
        sim_chip_launch(chip)->measurement[0] ^= 0xff;
        assert_int_equal(sim_chip_save(chip), 0);
    }

    /* Back in the original VM: it opens; then tamper and truncation are refused, both for a
     * single sealed image (the file before the two slots) and for a two-slot file holding that
     * image in slot 1 and nothing in slot 2. In the two-slot file, changes to the empty slot are
     * a spoiled slot next to a valid one (what a torn write leaves): the file opens. */
    p = open_sim();
    {
        _cleanup_free_ uint8_t *img = NULL;
        size_t ilen = 0;
        assert_true(newest_slot(p, orig, olen, NULL, &img, &ilen) >= 0);
        free(orig);
        orig = img;
        olen = ilen;
        img = NULL;
    }
    for (int form = 0; form < 2; form++) {
        _cleanup_free_ uint8_t *f = NULL;
        size_t flen = olen, slot2 = SIZE_MAX;
        if (form == 0) {
            f = malloc(olen);
            assert_non_null(f);
            memcpy(f, orig, olen);
        } else {
            size_t cap = (olen + 4095) / 4096 * 4096;
            f = make_slots(orig, olen, NULL, 0, cap, &flen);
            slot2 = 16 + 4 + cap;
        }
        for (size_t i = 0; i < flen; i += (i < 64 ? 1 : 53)) {
            _cleanup_(vault_freep) Vault *b = NULL;
            int r;
            f[i] ^= 0x10;
            assert_int_equal(write_file_atomic(path, f, flen, 0600), 0);
            f[i] ^= 0x10;
            assert_int_equal(vault_new(&b), 0);
            assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
            r = keystore_load(ks, b);
            if (i >= slot2) {
                assert_int_equal(r, 0);
                assert_int_equal(vault_key_count(b), vault_key_count(a));
                ks = keystore_free(ks);
                continue;
            }
            /* Header fields select another key or fail validation; the body fails the tag. */
            assert_true(r == -EKEYREJECTED || r == -EBADMSG || r == -EOPNOTSUPP);
            assert_int_equal(vault_key_count(b), 0);
            assert_int_equal(keystore_save(ks, b), -ESTALE);
            ks = keystore_free(ks);
        }
        for (size_t n = 0; n < flen; n += (n < 100 ? 7 : 301)) {
            _cleanup_(vault_freep) Vault *b = NULL;
            int r;
            assert_int_equal(write_file_atomic(path, f, n, 0600), 0);
            assert_int_equal(vault_new(&b), 0);
            assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
            r = keystore_load(ks, b);
            assert_true(r == -EBADMSG || r == -EKEYREJECTED);
            ks = keystore_free(ks);
        }
    }
    {
        _cleanup_(vault_freep) Vault *b = NULL;
        assert_int_equal(write_file_atomic(path, orig, olen, 0600), 0);
        assert_int_equal(vault_new(&b), 0);
        assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
        assert_int_equal(keystore_load(ks, b), 0);
        assert_same(a, b);
        ks = keystore_free(ks);
    }
    /* Regression (review finding "keystore header downgrade"): the header records the
     * derivation parameters, but the file must never choose them. A file sealed with any other
     * parameters (guest_field_select 0: a key every VM on the chip can derive; or another
     * selection) is refused and left untouched, although it is perfectly valid under its own
     * parameters. */
    {
        static const uint64_t other_gfs[] = {0, SNP_GFS_MEASUREMENT,
                                             KEYSTORE_DEFAULT_GFS | SNP_GFS_TCB_VERSION};
        for (size_t i = 0; i < sizeof other_gfs / sizeof other_gfs[0]; i++) {
            _cleanup_(vault_freep) Vault *b = NULL, *c = NULL, *d = NULL;
            _cleanup_free_ uint8_t *planted = NULL, *after = NULL;
            size_t plen = 0, alen = 0;
            _cleanup_(secret_freep) Secret *content = NULL;
            KeystoreSealParams prm;
            keystore_seal_params_default(&prm);
            prm.guest_field_select = other_gfs[i];
            /* The "attacker" seals a copy of the state under parameters of its choice. */
            assert_int_equal(write_file_atomic(path, orig, olen, 0600), 0);
            assert_int_equal(vault_new(&b), 0);
            assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
            assert_int_equal(keystore_load(ks, b), 0);
            ks = keystore_free(ks);
            assert_int_equal(keystore_serialize(b, &content), 0);
            assert_int_equal(keystore_seal(p, &prm, 1, content, &planted, &plen), 0);
            assert_int_equal(write_file_atomic(path, planted, plen, 0600), 0);
            /* vhsmd with the configured (default) parameters refuses it and cannot save. */
            assert_int_equal(vault_new(&c), 0);
            assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
            assert_int_equal(keystore_load(ks, c), -EKEYREJECTED);
            assert_int_equal(vault_key_count(c), 0);
            assert_int_equal(keystore_save(ks, c), -ESTALE);
            ks = keystore_free(ks);
            assert_int_equal(read_full_file(path, KEYSTORE_MAX_FILE, &after, &alen), 0);
            assert_int_equal(alen, plen);
            assert_memory_equal(after, planted, plen);
            /* Control: the file is valid under its own parameters, so the refusal above is the
             * parameter check, not a broken file. */
            assert_int_equal(vault_new(&d), 0);
            assert_int_equal(keystore_new(p, path, &prm, &ks), 0);
            assert_int_equal(keystore_load(ks, d), 0);
            assert_same(a, d);
            ks = keystore_free(ks);
        }
    }
    snp_provider_free(p);
}

/* Child: rotate "k" forever, each rotation persisted. */
/* Rotates until killed; after the first durable rotation it writes one byte to progress_fd. */
static _noreturn_ void rotate_forever(const char *path, int progress_fd) {
    SnpProvider *p = NULL;
    Keystore *ks = NULL;
    Vault *v = NULL;
    int r;
    if ((r = snp_provider_open("sim", simdir, &p)) < 0 ||
        (r = keystore_new(p, path, NULL, &ks)) < 0 || (r = vault_new(&v)) < 0 ||
        (r = keystore_load(ks, v)) < 0) {
        fprintf(stderr, "crash-loop child: start: %s\n", strerror(-r));
        _exit(2);
    }
    vault_set_keystore(v, ks);
    (void)signal(SIGPIPE, SIG_IGN); /* the parent may have stopped listening */
    for (bool told = false;; told = true) {
        uint32_t version = 0;
        if ((r = vault_key_rotate(v, &alice, "k", &version)) < 0) {
            fprintf(stderr, "crash-loop child: rotate: %s\n", strerror(-r));
            _exit(3);
        }
        /* Bounded: well below alice's quotas (4 MiB of versions) and the 1000 versions listed (a
         * fast disk rotates thousands of times in 30 rounds); the kills go on. */
        if (version >= 200) {
            if (!told)
                (void)!write(progress_fd, "x", 1);
            for (;;)
                pause();
        }
        if (!told)
            (void)!write(progress_fd, "x", 1);
    }
}

static void test_crash_loop(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = open_sim();
    char path[600];
    json_int_t last = 1;
    unsigned seed = (unsigned)time(NULL);
    int changed = 0;

    path_of(path, sizeof path, "crash.ks");
    {
        _cleanup_(vault_freep) Vault *v = NULL;
        _cleanup_(keystore_freep) Keystore *ks = NULL;
        VaultKeySpec spec = {.type = VAULT_KEY_EC_P256};
        assert_int_equal(vault_new(&v), 0);
        assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
        assert_int_equal(keystore_load(ks, v), -ENOENT);
        vault_set_keystore(v, ks);
        assert_int_equal(vault_key_generate(v, &alice, "k", &spec), 0);
        vault_set_keystore(v, NULL);
    }
    for (int round = 0; round < 30; round++) {
        _cleanup_(vault_freep) Vault *v = NULL;
        _cleanup_(keystore_freep) Keystore *ks = NULL;
        json_auto_t *d = NULL;
        json_int_t latest;
        int status, fds[2];
        pid_t pid;
        char c;
        assert_int_equal(pipe(fds), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            rotate_forever(path, fds[1]);
        }
        close(fds[1]);
        /* Half of the rounds kill at once (start-up, load, first write), the other half after
         * the child's first durable rotation (so that the test proves progress however loaded
         * the machine is), each after a random further delay. */
        if (round % 2) {
            struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
            assert_int_equal(poll(&pfd, 1, 60000), 1);
            assert_int_equal(read(fds[0], &c, 1), 1);
        }
        close(fds[0]);
        (void)usleep((useconds_t)(rand_r(&seed) % 30000));
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        assert_int_equal(vault_new(&v), 0);
        assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
        assert_int_equal(keystore_load(ks, v), 0);
        assert_int_equal(vault_key_describe(v, &alice, "k", &d), 0);
        latest = json_integer_value(json_object_get(d, "latest_version"));
        assert_true(latest >= last);
        assert_int_equal(json_array_size(json_object_get(d, "versions")), (size_t)latest);
        if (latest > last)
            changed++;
        last = latest;
    }
    /* The child did get work done between kills (otherwise the test proves nothing). */
    assert_true(changed > 0);
    {
        /* No temp files left behind by a successful write (the last one may be an orphan). */
        char cmd[700];
        snprintf(cmd, sizeof cmd, "test $(ls -a '%s' | wc -l) -lt 40", tmpdir);
        assert_int_equal(system(cmd), 0);
    }
}

/* A key change is invisible until it is durable: while rotations fail to persist (the keystore's
 * directory replaced by a file, as a hostile host or a full disk would), a concurrent user never
 * encrypts under the version that is then taken back (such a ciphertext could never be decrypted
 * again, since a later rotation makes a different version 2). */
typedef struct UndoRace {
    Vault *v;
    atomic_bool stop;
    atomic_int seen_v2, encrypted;
} UndoRace;

static void *undo_race_user(void *p) {
    UndoRace *u = p;
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    while (!atomic_load(&u->stop)) {
        _cleanup_free_ uint8_t *ct = NULL;
        size_t cl = 0;
        if (vault_encrypt(u->v, &alice, "k", &op, (const uint8_t *)"x", 1, &ct, &cl) == 0) {
            atomic_fetch_add(&u->encrypted, 1);
            if (bytes_get_be32(ct + 8) != 1)
                atomic_fetch_add(&u->seen_v2, 1);
        }
    }
    return NULL;
}

static void test_failed_change_never_visible(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = open_sim();
    _cleanup_(vault_freep) Vault *v = NULL;
    _cleanup_(keystore_freep) Keystore *ks = NULL;
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    char dir[600], path[700], moved[700];
    UndoRace u = {0};
    pthread_t t[2];
    int fails = 0;
    json_t *d = NULL;

    path_of(dir, sizeof dir, "undo");
    assert_int_equal(mkdir(dir, 0700), 0);
    (void)snprintf(path, sizeof path, "%s/ks", dir);
    (void)snprintf(moved, sizeof moved, "%s.moved", dir);
    assert_int_equal(vault_new(&v), 0);
    assert_int_equal(keystore_new(p, path, NULL, &ks), 0);
    assert_int_equal(keystore_load(ks, v), -ENOENT);
    vault_set_keystore(v, ks);
    assert_int_equal(vault_key_generate(v, &alice, "k", &spec), 0);
    /* Every later write fails: the directory is now a file. */
    assert_int_equal(rename(dir, moved), 0);
    assert_int_equal(close(open(dir, O_CREAT | O_WRONLY | O_CLOEXEC, 0600)), 0);

    u.v = v;
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, undo_race_user, &u), 0);
    for (int i = 0; i < 3000; i++) {
        uint32_t ver = 0;
        fails += vault_key_rotate(v, &alice, "k", &ver) < 0;
        assert_int_equal(ver, 0);
        fails += vault_key_generate(v, &alice, "new", &spec) < 0;
    }
    atomic_store(&u.stop, true);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(fails, 6000);
    assert_true(atomic_load(&u.encrypted) > 0);
    assert_int_equal(atomic_load(&u.seen_v2), 0);
    assert_int_equal(vault_key_describe(v, &alice, "k", &d), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "latest_version")), 1);
    json_decref(d);
    assert_int_equal(vault_key_describe(v, &alice, "new", &d), -ENOKEY);
    vault_set_keystore(v, NULL);
    assert_int_equal(unlink(dir), 0);
    assert_int_equal(rename(moved, dir), 0);
}

/* ---- freshness (issue 8) ---- */

static uint64_t file_generation(SnpProvider *p, const char *path) {
    _cleanup_free_ uint8_t *file = NULL;
    _cleanup_(secret_freep) Secret *content = NULL;
    KeystoreSealParams prm;
    uint64_t gen = UINT64_MAX;
    size_t len = 0;
    keystore_seal_params_default(&prm);
    _cleanup_free_ uint8_t *img = NULL;
    size_t ilen = 0;
    assert_int_equal(read_file(path, &file, &len), 0);
    /* Every write leaves a two-slot file; the newest image is the file's generation. */
    assert_true(newest_slot(p, file, len, NULL, &img, &ilen) >= 0);
    assert_int_equal(keystore_unseal(p, &prm, img, ilen, &content, &gen), 0);
    /* Format 2 on every write, the generation in the header at offset 48. */
    assert_int_equal(bytes_get_be16(img + 4), 2);
    assert_int_equal(bytes_get_be64(img + 48), gen);
    return gen;
}

/* The old format, written independently of keystore.c: format 1, 16 zero bytes after the
 * nonce, AES-256-GCM under HKDF-SHA256(derived key, info "nitride-vhsm-keystore-v1"). */
static void seal_v1(SnpProvider *p, const Secret *content, uint8_t **ret, size_t *ret_len) {
    _cleanup_(secret_freep) Secret *dk = NULL;
    SnpDerivedKeyRequest req = {.root_key_select = SNP_KEY_ROOT_VCEK,
                                .guest_field_select = KEYSTORE_DEFAULT_GFS};
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    size_t n = 64 + secret_size(content) + 16;
    uint8_t key[32], *out = malloc(n);
    OSSL_PARAM prm[4];
    int len = 0;

    assert_non_null(out);
    assert_int_equal(snp_provider_get_derived_key(p, &req, &dk), 0);
    prm[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    prm[1] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret_data(dk), secret_size(dk));
    prm[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                               (char *)"nitride-vhsm-keystore-v1", 24);
    prm[3] = OSSL_PARAM_construct_end();
    assert_int_equal(EVP_KDF_derive(kctx, key, sizeof key, prm), 1);
    memset(out, 0, 64);
    memcpy(out, "NTKS", 4);
    bytes_put_be16(out + 4, 1);
    bytes_put_be16(out + 6, 64);
    bytes_put_be32(out + 8, SNP_KEY_ROOT_VCEK);
    bytes_put_be64(out + 12, KEYSTORE_DEFAULT_GFS);
    assert_int_equal(RAND_bytes(out + 36, 12), 1);
    assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, out + 36), 1);
    assert_int_equal(EVP_EncryptUpdate(c, NULL, &len, out, 64), 1);
    assert_int_equal(
        EVP_EncryptUpdate(c, out + 64, &len, secret_const_data(content), (int)secret_size(content)),
        1);
    assert_int_equal(EVP_EncryptFinal_ex(c, out + 64 + len, &len), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, out + n - 16), 1);
    OPENSSL_cleanse(key, sizeof key);
    EVP_CIPHER_CTX_free(c);
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    *ret = out;
    *ret_len = n;
}

/* Opens path into a new vault with an anchor at anchor_path (NULL: none) and, if accept >= 0,
 * the override of that generation. Returns keystore_load()'s result; the keystore, vault and anchor
 * are returned for the caller to free. */
static int open_with(SnpProvider *p, const char *path, const char *anchor_path, int64_t accept,
                     Keystore **ret_ks, Vault **ret_v, FreshnessAnchor **ret_a) {
    *ret_a = NULL;
    assert_int_equal(vault_new(ret_v), 0);
    assert_int_equal(keystore_new(p, path, NULL, ret_ks), 0);
    if (anchor_path) {
        assert_int_equal(freshness_anchor_new(anchor_path, ret_a), 0);
        keystore_set_anchor(*ret_ks, *ret_a);
    }
    if (accept >= 0)
        keystore_accept_rollback(*ret_ks, (uint64_t)accept);
    return keystore_load(*ret_ks, *ret_v);
}

typedef struct Opened {
    Keystore *ks;
    Vault *v;
    FreshnessAnchor *a;
} Opened;

static void opened_done(Opened *o) {
    if (o->v)
        vault_set_keystore(o->v, NULL);
    o->v = vault_free(o->v);
    o->ks = keystore_free(o->ks);
    o->a = freshness_anchor_free(o->a);
}

static int open_o(SnpProvider *p, const char *path, const char *anchor_path, int64_t accept,
                  Opened *o) {
    opened_done(o);
    return open_with(p, path, anchor_path, accept, &o->ks, &o->v, &o->a);
}

static void test_generation_and_old_format(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = open_sim();
    _cleanup_(opened_done) Opened o = {0};
    _cleanup_free_ uint8_t *v1 = NULL;
    _cleanup_(secret_freep) Secret *content = NULL;
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    KeystoreFreshness f;
    size_t v1len = 0;
    char path[600];

    path_of(path, sizeof path, "gen.ks");
    assert_int_equal(open_o(p, path, NULL, -1, &o), -ENOENT);
    vault_set_keystore(o.v, o.ks);
    assert_int_equal(vault_key_generate(o.v, &alice, "k", &spec), 0);
    assert_int_equal(file_generation(p, path), 1);
    assert_int_equal(vault_key_rotate(o.v, &alice, "k", NULL), 0);
    assert_int_equal(file_generation(p, path), 2);
    assert_int_equal(keystore_save(o.ks, o.v), 0);
    assert_int_equal(file_generation(p, path), 3);
    keystore_get_freshness(o.ks, &f);
    assert_int_equal(f.generation, 3);
    assert_false(f.anchored);
    /* A later run continues from the file's generation. */
    assert_int_equal(open_o(p, path, NULL, -1, &o), 0);
    keystore_get_freshness(o.ks, &f);
    assert_int_equal(f.generation, 3);
    assert_int_equal(keystore_save(o.ks, o.v), 0);
    assert_int_equal(file_generation(p, path), 4);

    /* The generation is authenticated: changing it breaks the tag (the newest image alone, as
     * a single-image file: in the two-slot file the other slot would still open). */
    {
        _cleanup_free_ uint8_t *file = NULL, *whole = NULL;
        size_t len = 0, wlen = 0;
        assert_int_equal(read_file(path, &whole, &wlen), 0);
        assert_true(newest_slot(p, whole, wlen, NULL, &file, &len) >= 0);
        file[63 - 8] ^= 0x01; /* low byte of the generation */
        assert_int_equal(write_file_atomic(path, file, len, 0600), 0);
        assert_int_equal(open_o(p, path, NULL, -1, &o), -EKEYREJECTED);
        file[63 - 8] ^= 0x01;
        file[56] ^= 0x01; /* reserved after the generation: must be zero */
        assert_int_equal(write_file_atomic(path, file, len, 0600), 0);
        assert_int_equal(open_o(p, path, NULL, -1, &o), -EBADMSG);
        file[56] ^= 0x01;
        assert_int_equal(write_file_atomic(path, file, len, 0600), 0);
    }

    /* Format 1 reads as generation 0, with its keys; the next write is format 2, generation 1. */
    assert_int_equal(open_o(p, path, NULL, -1, &o), 0);
    assert_int_equal(keystore_serialize(o.v, &content), 0);
    seal_v1(p, content, &v1, &v1len);
    assert_int_equal(write_file_atomic(path, v1, v1len, 0600), 0);
    assert_int_equal(open_o(p, path, NULL, -1, &o), 0);
    keystore_get_freshness(o.ks, &f);
    assert_int_equal(f.generation, 0);
    {
        json_auto_t *d = NULL;
        assert_int_equal(vault_key_describe(o.v, &alice, "k", &d), 0);
        assert_int_equal(json_integer_value(json_object_get(d, "latest_version")), 2);
    }
    assert_int_equal(keystore_save(o.ks, o.v), 0);
    assert_int_equal(file_generation(p, path), 1);
    /* Format 1 with non-zero bytes where format 2 has the generation: malformed. */
    v1[50] = 1;
    assert_int_equal(write_file_atomic(path, v1, v1len, 0600), 0);
    assert_int_equal(open_o(p, path, NULL, -1, &o), -EBADMSG);
    v1[50] = 0;
    /* Once anchored above 0, the format-1 file is an old copy like any other. */
    {
        char anchor[600];
        path_of(anchor, sizeof anchor, "gen.anchor");
        assert_int_equal(write_file_atomic(path, v1, v1len, 0600), 0);
        assert_int_equal(open_o(p, path, anchor, -1, &o), 0);
        vault_set_keystore(o.v, o.ks);
        assert_int_equal(vault_key_rotate(o.v, &alice, "k", NULL), 0);
        assert_int_equal(write_file_atomic(path, v1, v1len, 0600), 0);
        assert_int_equal(open_o(p, path, anchor, -1, &o), -EKEYREVOKED);
    }
}

static void test_rollback_refused(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = open_sim();
    _cleanup_(opened_done) Opened o = {0};
    _cleanup_free_ uint8_t *old = NULL, *newer = NULL, *after = NULL;
    size_t oldlen = 0, newlen = 0, alen = 0;
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    KeystoreFreshness f;
    uint64_t g = 0;
    char path[600], anchor[600];

    path_of(path, sizeof path, "rb.ks");
    path_of(anchor, sizeof anchor, "run/rb.anchor");
    assert_int_equal(open_o(p, path, anchor, -1, &o), -ENOENT);
    /* The anchor exists from the start (0), so a missing directory or a read-only one shows. */
    assert_int_equal(freshness_anchor_read(o.a, &g), 0);
    assert_int_equal(g, 0);
    vault_set_keystore(o.v, o.ks);
    assert_int_equal(vault_key_generate(o.v, &alice, "doomed", &spec), 0); /* 1 */
    assert_int_equal(read_file(path, &old, &oldlen), 0);
    assert_int_equal(vault_key_generate(o.v, &alice, "keep", &spec), 0); /* 2 */
    assert_int_equal(vault_key_delete(o.v, &alice, "doomed"), 0);        /* 3 */
    assert_int_equal(read_file(path, &newer, &newlen), 0);
    assert_int_equal(freshness_anchor_read(o.a, &g), 0);
    assert_int_equal(g, 3);

    /* The old file put back: refused, nothing loaded, nothing written. */
    assert_int_equal(write_file_atomic(path, old, oldlen, 0600), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), -EKEYREVOKED);
    keystore_get_freshness(o.ks, &f);
    assert_true(f.anchored);
    assert_int_equal(f.generation, 1);
    assert_int_equal(f.anchor_read, 0);
    assert_int_equal(f.anchor_generation, 3);
    assert_false(f.rollback_accepted);
    assert_int_equal(vault_key_count(o.v), 0);
    assert_int_equal(keystore_save(o.ks, o.v), -ESTALE);
    /* An override of another generation accepts nothing. */
    assert_int_equal(open_o(p, path, anchor, 2, &o), -EKEYREVOKED);
    assert_int_equal(open_o(p, path, anchor, 0, &o), -EKEYREVOKED);
    assert_int_equal(read_file(path, &after, &alen), 0);
    assert_int_equal(alen, oldlen);
    assert_memory_equal(after, old, oldlen);
    free(after);
    after = NULL;
    assert_int_equal(freshness_anchor_read(o.a, &g), 0);
    assert_int_equal(g, 3);
    /* Control: without the anchor the same file opens (the refusal is the anchor's). */
    assert_int_equal(open_o(p, path, NULL, -1, &o), 0);
    assert_int_equal(vault_key_count(o.v), 1);

    /* Override of exactly generation 1: accepted, resealed above the anchor. */
    assert_int_equal(open_o(p, path, anchor, 1, &o), 0);
    keystore_get_freshness(o.ks, &f);
    assert_true(f.rollback_accepted);
    assert_int_equal(f.anchor_generation, 3);
    assert_int_equal(f.resealed_generation, 4);
    assert_int_equal(vault_key_count(o.v), 1); /* "doomed" is back, as the operator accepted */
    assert_int_equal(file_generation(p, path), 4);
    assert_int_equal(freshness_anchor_read(o.a, &g), 0);
    assert_int_equal(g, 4);
    vault_set_keystore(o.v, o.ks);
    assert_int_equal(vault_key_generate(o.v, &alice, "after", &spec), 0);
    assert_int_equal(file_generation(p, path), 5);
    /* The newer file of the old history (generation 3) is refused now. */
    assert_int_equal(write_file_atomic(path, newer, newlen, 0600), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), -EKEYREVOKED);

    /* A file ahead of the anchor (crash between the two writes) opens and advances it. */
    assert_int_equal(freshness_anchor_write(o.a, 2), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), 0);
    assert_int_equal(freshness_anchor_read(o.a, &g), 0);
    assert_int_equal(g, 3);

    /* A deleted keystore is a rollback to generation 0. */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), -EKEYREVOKED);
    keystore_get_freshness(o.ks, &f);
    assert_int_equal(f.generation, 0);
    assert_int_equal(f.anchor_generation, 3);
    assert_int_equal(keystore_save(o.ks, o.v), -ESTALE);
    assert_int_equal(access(path, F_OK), -1);
    /* Accepted with 0: starts empty, and writes continue above the anchor. */
    assert_int_equal(open_o(p, path, anchor, 0, &o), -ENOENT);
    keystore_get_freshness(o.ks, &f);
    assert_true(f.rollback_accepted);
    assert_int_equal(f.resealed_generation, 0);
    vault_set_keystore(o.v, o.ks);
    assert_int_equal(vault_key_generate(o.v, &alice, "fresh", &spec), 0);
    assert_int_equal(file_generation(p, path), 4);
    assert_int_equal(freshness_anchor_read(o.a, &g), 0);
    assert_int_equal(g, 4);
}

static void test_anchor_forged(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = open_sim();
    _cleanup_(opened_done) Opened o = {0};
    _cleanup_free_ uint8_t *good = NULL, *old = NULL;
    _cleanup_(secret_freep) Secret *other = NULL;
    size_t glen = 0, oldlen = 0;
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    uint8_t img[FRESHNESS_ANCHOR_SIZE];
    KeystoreFreshness f;
    uint64_t g = 0;
    char path[600], anchor[600];

    path_of(path, sizeof path, "forge.ks");
    path_of(anchor, sizeof anchor, "forge.anchor");
    assert_int_equal(open_o(p, path, anchor, -1, &o), -ENOENT);
    vault_set_keystore(o.v, o.ks);
    assert_int_equal(vault_key_generate(o.v, &alice, "a", &spec), 0); /* 1 */
    assert_int_equal(read_file(path, &old, &oldlen), 0);
    assert_int_equal(vault_key_rotate(o.v, &alice, "a", NULL), 0); /* 2 */
    assert_int_equal(read_file(anchor, &good, &glen), 0);
    assert_int_equal(glen, FRESHNESS_ANCHOR_SIZE);
    assert_int_equal(write_file_atomic(path, old, oldlen, 0600), 0);

    /* Every single-bit change of the anchor is refused (the generation lowered to 1 too). */
    for (size_t i = 0; i < glen * 8; i++) {
        int r;
        good[i / 8] ^= (uint8_t)(1u << (i % 8));
        assert_int_equal(write_file_atomic(anchor, good, glen, 0600), 0);
        good[i / 8] ^= (uint8_t)(1u << (i % 8));
        r = open_o(p, path, anchor, -1, &o);
        assert_true(r == -EKEYREJECTED || r == -EBADMSG || r == -EOPNOTSUPP);
        keystore_get_freshness(o.ks, &f);
        assert_int_equal(f.anchor_read, r);
        assert_int_equal(vault_key_count(o.v), 0);
    }
    /* Forged: a well-formed anchor for generation 0 under another key. */
    assert_int_equal(secret_new(FRESHNESS_KEY_SIZE, &other), 0);
    assert_int_equal(RAND_bytes(secret_data(other), FRESHNESS_KEY_SIZE), 1);
    assert_int_equal(freshness_anchor_encode(other, 0, img), 0);
    assert_int_equal(write_file_atomic(anchor, img, sizeof img, 0600), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), -EKEYREJECTED);
    {
        uint64_t got = 0;
        assert_int_equal(freshness_anchor_decode(other, img, sizeof img, &got), 0);
        assert_int_equal(got, 0);
    }
    /* Truncated, longer, empty. */
    assert_int_equal(write_file_atomic(anchor, good, glen - 1, 0600), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), -EBADMSG);
    {
        uint8_t longer[FRESHNESS_ANCHOR_SIZE + 1] = {0};
        memcpy(longer, good, glen);
        assert_int_equal(write_file_atomic(anchor, longer, sizeof longer, 0600), 0);
        assert_int_equal(open_o(p, path, anchor, -1, &o), -EBADMSG);
    }
    assert_int_equal(write_file_atomic(anchor, good, 0, 0600), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), -EBADMSG);
    /* The untouched anchor still refuses the old file; override of its generation accepts it
     * (and a tampered anchor can be overridden too, rewriting it). */
    assert_int_equal(write_file_atomic(anchor, good, glen, 0600), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), -EKEYREVOKED);
    good[20] ^= 1;
    assert_int_equal(write_file_atomic(anchor, good, glen, 0600), 0);
    good[20] ^= 1;
    assert_int_equal(open_o(p, path, anchor, 1, &o), 0);
    keystore_get_freshness(o.ks, &f);
    assert_true(f.rollback_accepted);
    assert_int_equal(f.anchor_read, -EKEYREJECTED);
    assert_int_equal(f.resealed_generation, 2);
    assert_int_equal(freshness_anchor_read(o.a, &g), 0);
    assert_int_equal(g, 2);

    /* Specification strings. */
    {
        char *s = NULL;
        assert_int_equal(freshness_anchor_spec_parse("none", &s), 0);
        assert_null(s);
        assert_int_equal(freshness_anchor_spec_parse("file:/run/x", &s), 0);
        assert_string_equal(s, "/run/x");
        free(s);
        assert_int_equal(freshness_anchor_spec_parse("file:", &s), -EINVAL);
        assert_int_equal(freshness_anchor_spec_parse("file:rel", &s), -EINVAL);
        assert_int_equal(freshness_anchor_spec_parse("/run/x", &s), -EINVAL);
        assert_int_equal(freshness_anchor_spec_parse("kms", &s), -EINVAL);
    }
}

/* The two-slot write (docs/vault.md "Keystore file"): a save overwrites the older slot in place
 * (same inode, same size: no rename), and a crash at each step of it leaves a file that opens
 * with an acknowledged generation: before the write (the old file), in the middle of it (a torn
 * slot: any prefix of the new slot's bytes over the old ones), after it but before the anchor
 * was advanced (the anchor one behind: opens and advances it), and after. A newest slot spoiled
 * on purpose while the anchor holds its generation is a rollback and refused. */
static void test_slots_torn_write(void **state) {
    _cleanup_(snp_provider_freep) SnpProvider *p = open_sim();
    _cleanup_(opened_done) Opened o = {0};
    _cleanup_free_ uint8_t *before = NULL, *after = NULL, *torn = NULL;
    size_t blen = 0, alen = 0;
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    struct stat st1, st2;
    char path[600], anchor[600];
    uint64_t g = 0;
    size_t cap, slot, off, cuts = 0;
    int target;

    path_of(path, sizeof path, "slots.ks");
    path_of(anchor, sizeof anchor, "slots.anchor");
    assert_int_equal(open_o(p, path, anchor, -1, &o), -ENOENT);
    vault_set_keystore(o.v, o.ks);
    assert_int_equal(vault_key_generate(o.v, &alice, "a", &spec), 0); /* 1: a new file */
    assert_int_equal(vault_key_rotate(o.v, &alice, "a", NULL), 0);    /* 2: slot 2 */
    assert_int_equal(stat(path, &st1), 0);
    assert_int_equal(read_file(path, &before, &blen), 0);
    assert_int_equal(newest_slot(p, before, blen, &g, NULL, NULL), 1);
    assert_int_equal(g, 2);
    assert_int_equal(vault_key_rotate(o.v, &alice, "a", NULL), 0); /* 3: slot 1, in place */
    assert_int_equal(stat(path, &st2), 0);
    assert_int_equal(st1.st_ino, st2.st_ino);
    assert_int_equal(st1.st_size, st2.st_size);
    assert_int_equal(read_file(path, &after, &alen), 0);
    assert_int_equal(alen, blen);
    target = newest_slot(p, after, alen, &g, NULL, NULL);
    assert_int_equal(target, 0);
    assert_int_equal(g, 3);
    assert_memory_equal(after + 8, before + 8, 8); /* the header did not change */
    cap = bytes_get_be32(after + 8);
    slot = 16 + (size_t)target * (4 + cap);
    /* The other slot (generation 2) is untouched by the write. */
    assert_memory_equal(after + 16 + 4 + cap, before + 16 + 4 + cap, 4 + cap);

    /* Killed before the write: generation 2, anchor 2. */
    assert_int_equal(write_file_atomic(path, before, blen, 0600), 0);
    assert_int_equal(freshness_anchor_write(o.a, 2), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), 0);
    assert_int_equal(file_generation(p, path), 2);
    /* Killed in the middle: the first `off` bytes of the slot are new, the rest old. */
    torn = malloc(alen);
    assert_non_null(torn);
    for (off = 0; off <= 4 + cap; off += (off < 96 ? 1 : 97), cuts++) {
        _cleanup_(vault_freep) Vault *v = NULL;
        _cleanup_(keystore_freep) Keystore *ks = NULL;
        _cleanup_(freshness_anchor_freep) FreshnessAnchor *a = NULL;
        json_auto_t *d = NULL;
        json_int_t latest;
        memcpy(torn, before, blen);
        memcpy(torn + slot, after + slot, off);
        assert_int_equal(write_file_atomic(path, torn, alen, 0600), 0);
        assert_int_equal(freshness_anchor_write(o.a, 2), 0);
        assert_int_equal(open_with(p, path, anchor, -1, &ks, &v, &a), 0);
        assert_int_equal(vault_key_describe(v, &alice, "a", &d), 0);
        latest = json_integer_value(json_object_get(d, "latest_version"));
        /* The new generation only once its slot is whole, the old one otherwise. */
        assert_int_equal(latest, memcmp(torn + slot, after + slot, 4 + cap) == 0 ? 3 : 2);
        /* And the next save goes on from there into the other slot. */
        vault_set_keystore(v, ks);
        assert_int_equal(vault_key_rotate(v, &alice, "a", NULL), 0);
        vault_set_keystore(v, NULL);
    }
    assert_true(cuts > 40);
    /* Killed after the write, before the anchor: opens and advances the anchor to 3. */
    assert_int_equal(write_file_atomic(path, after, alen, 0600), 0);
    assert_int_equal(freshness_anchor_write(o.a, 2), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), 0);
    assert_int_equal(freshness_anchor_read(o.a, &g), 0);
    assert_int_equal(g, 3);
    /* After both: generation 3. Then the newest slot spoiled on purpose: generation 2 is older
     * than the anchor, refused. */
    assert_int_equal(open_o(p, path, anchor, -1, &o), 0);
    assert_int_equal(file_generation(p, path), 3);
    memcpy(torn, after, alen);
    torn[slot + 4 + 70] ^= 1;
    assert_int_equal(write_file_atomic(path, torn, alen, 0600), 0);
    assert_int_equal(open_o(p, path, anchor, -1, &o), -EKEYREVOKED);
    /* Both slots spoiled: refused whatever the anchor. */
    torn[16 + 4 + cap + 4 + 70] ^= 1;
    assert_int_equal(write_file_atomic(path, torn, alen, 0600), 0);
    assert_int_equal(open_o(p, path, NULL, -1, &o), -EKEYREJECTED);
    /* A slot that does not fit (length over the capacity) is spoiled, not trusted. */
    memcpy(torn, after, alen);
    bytes_put_be32(torn + slot, (uint32_t)cap + 1);
    assert_int_equal(write_file_atomic(path, torn, alen, 0600), 0);
    assert_int_equal(open_o(p, path, NULL, -1, &o), 0);
    assert_int_equal(newest_slot(p, torn, alen, &g, NULL, NULL), 1);
    /* Two slots of the same generation are never written: malformed. */
    {
        _cleanup_free_ uint8_t *img = NULL, *two = NULL;
        size_t ilen = 0, tlen = 0;
        assert_int_equal(newest_slot(p, after, alen, NULL, &img, &ilen), 0);
        two = make_slots(img, ilen, img, ilen, cap, &tlen);
        assert_int_equal(write_file_atomic(path, two, tlen, 0600), 0);
        assert_int_equal(open_o(p, path, NULL, -1, &o), -EBADMSG);
    }
    /* A file that outgrows its slots is rewritten larger (atomically), then in place again. */
    assert_int_equal(write_file_atomic(path, after, alen, 0600), 0);
    assert_int_equal(open_o(p, path, NULL, -1, &o), 0);
    vault_set_keystore(o.v, o.ks);
    for (int i = 0; i < 80; i++) {
        char name[32];
        snprintf(name, sizeof name, "grow-%d", i);
        assert_int_equal(vault_key_generate(o.v, &alice, name, &spec), 0);
    }
    assert_int_equal(stat(path, &st2), 0);
    assert_true((size_t)st2.st_size > alen);
    assert_int_equal(file_generation(p, path), 3 + 80);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_roundtrip),
        cmocka_unit_test(test_sealed_roundtrip_and_undo),
        cmocka_unit_test(test_wrong_measurement_and_tamper),
        cmocka_unit_test(test_crash_loop),
        cmocka_unit_test(test_failed_change_never_visible),
        cmocka_unit_test(test_generation_and_old_format),
        cmocka_unit_test(test_rollback_refused),
        cmocka_unit_test(test_anchor_forged),
        cmocka_unit_test(test_slots_torn_write),
    };
    if (vault_init(0) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, setup_all, teardown_all);
    /* libjose initialises OpenSSL from a library constructor, so OpenSSL's atexit cleanup is
     * not registered and LeakSanitizer would report its global DRBGs: clean up explicitly. */
    OPENSSL_cleanup();
    return r;
}
