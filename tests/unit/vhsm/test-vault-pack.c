/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Issue 8 finding 1: every symmetric key version used to be its own Secret mapping (guard pages
 * included), so ~32k AES/HMAC versions reached vm.max_map_count (65530) and every later mmap in
 * the daemon failed. Symmetric material is now packed into shared locked chunks. This test makes
 * 40,000 AES-256 versions through the vault API in one process (four vaults, as the per-vault
 * quotas allow about 30k AES versions at most; each vault holds one key rotated 5,000 times and
 * 5,000 keys), checks that the process gains far fewer than 1000 mappings (it was 2-3 per version),
 * that the keys still encrypt and decrypt (latest and oldest version), and that deleting the keys
 * gives the slots back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/secret.h"
#include "vhsm/vault.h"
#include "vault-test-util.h"

#define N_VAULTS 4u
#define N_ROTATIONS 5000u /* per vault */
#define N_KEYS 5000u      /* per vault */
#define N_TOTAL (N_VAULTS * (N_ROTATIONS + N_KEYS))

static size_t count_maps(void) {
    FILE *f = fopen("/proc/self/maps", "re");
    size_t n = 0;
    int c;
    assert_non_null(f);
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* VmLck of this process in KiB (0 if absent). */
static unsigned long locked_kib(void) {
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    unsigned long kib = 0;
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %lu kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void roundtrip(Vault *v, const char *name, const uint8_t *ct_in, size_t ct_in_len) {
    static const uint8_t msg[] = "packed symmetric key material";
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    _cleanup_free_ uint8_t *ct = NULL;
    _cleanup_(secret_freep) Secret *pt = NULL;
    size_t ct_len = 0;

    if (!ct_in) {
        assert_int_equal(vault_encrypt(v, &alice, name, &op, msg, sizeof msg, &ct, &ct_len), 0);
        ct_in = ct;
        ct_in_len = ct_len;
    }
    assert_int_equal(vault_decrypt(v, &alice, name, &op, ct_in, ct_in_len, &pt), 0);
    assert_int_equal(secret_size(pt), sizeof msg);
    assert_memory_equal(secret_data(pt), msg, sizeof msg);
}

static Vault *new_vault(void) {
    /* Room for 10,000 AES versions (4 KiB each in the cost table) for alice. */
    VaultQuota q = {.max_keys = 100000,
                    .max_versions = 100000,
                    .max_bytes = (uint64_t)60 << 20,
                    .total_bytes = (uint64_t)60 << 20,
                    .root_reserve = (uint64_t)60 << 20};
    Vault *v = NULL;
    assert_int_equal(vault_new(&v), 0);
    assert_int_equal(vault_set_quota(v, &q), 0);
    return v;
}

static void test_40k_aes_versions(void **state) {
    static const uint8_t msg[] = "packed symmetric key material";
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    _cleanup_free_ uint8_t *ct1 = NULL;
    SecretPackedStats s0, s1, s2;
    size_t maps0, maps1, maps2, ct1_len = 0;
    unsigned long lck0, lck1;
    Vault *v[N_VAULTS];
    uint32_t ver = 0;
    char name[32];

    for (unsigned n = 0; n < N_VAULTS; n++)
        v[n] = new_vault();
    maps0 = count_maps();
    lck0 = locked_kib();
    s0 = secret_packed_stats();

    for (unsigned n = 0; n < N_VAULTS; n++) {
        assert_int_equal(vault_key_generate(v[n], &alice, "rotated", &spec), 0);
        if (n == 0)
            assert_int_equal(
                vault_encrypt(v[0], &alice, "rotated", &op, msg, sizeof msg, &ct1, &ct1_len), 0);
        for (unsigned i = 1; i < N_ROTATIONS; i++) {
            assert_int_equal(vault_key_rotate(v[n], &alice, "rotated", &ver), 0);
            assert_int_equal(ver, i + 1);
        }
        for (unsigned i = 0; i < N_KEYS; i++) {
            snprintf(name, sizeof name, "k%05u", i);
            assert_int_equal(vault_key_generate(v[n], &alice, name, &spec), 0);
        }
    }

    maps1 = count_maps();
    lck1 = locked_kib();
    s1 = secret_packed_stats();
    print_message("%u AES-256 versions: mappings %zu -> %zu (+%zu), VmLck %lu -> %lu KiB, "
                  "packed chunks %zu, slots used %zu, locked %zu bytes, mapped %zu bytes\n",
                  N_TOTAL, maps0, maps1, maps1 - maps0, lck0, lck1, s1.chunks, s1.slots_used,
                  s1.bytes_locked, s1.bytes_mapped);
    assert_true(maps1 < maps0 + 1000);
    assert_int_equal(s1.slots_used - s0.slots_used, N_TOTAL);
    /* 64-byte slots: 40,000 x 64 = 2.5 MiB, in chunks of at most 1 MiB. */
    assert_true(s1.bytes_locked <= s0.bytes_locked + 4u * 1024 * 1024);
    assert_true(s1.chunks <= s0.chunks + 16);
    assert_int_equal(secret_packed_cost(32), 64);

    /* Still usable: the latest version, the first version (envelope names version 1), keys. */
    roundtrip(v[0], "rotated", NULL, 0);
    roundtrip(v[0], "rotated", ct1, ct1_len);
    roundtrip(v[N_VAULTS - 1], "rotated", NULL, 0);
    roundtrip(v[0], "k00000", NULL, 0);
    roundtrip(v[N_VAULTS - 1], "k04999", NULL, 0);
    /* A new mapping still works (the daemon's other allocations). */
    {
        _cleanup_(secret_freep) Secret *page = NULL;
        assert_int_equal(secret_new(4096, &page), 0);
    }

    /* Deleting gives the slots back and unmaps emptied chunks. */
    for (unsigned n = 0; n < N_VAULTS; n++) {
        assert_int_equal(vault_key_delete(v[n], &alice, "rotated"), 0);
        for (unsigned i = 0; i < N_KEYS; i++) {
            snprintf(name, sizeof name, "k%05u", i);
            assert_int_equal(vault_key_delete(v[n], &alice, name), 0);
        }
    }
    s2 = secret_packed_stats();
    maps2 = count_maps();
    assert_int_equal(s2.slots_used, s0.slots_used);
    assert_true(s2.chunks <= s0.chunks + 1);
    assert_true(maps2 <= maps1);
    for (unsigned n = 0; n < N_VAULTS; n++)
        vault_free(v[n]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_40k_aes_versions),
    };
    if (vault_init(0) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    OPENSSL_cleanup();
    return r;
}
