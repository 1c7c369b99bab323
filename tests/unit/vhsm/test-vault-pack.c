/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Issue 8 finding 1: every symmetric key version used to be its own Secret mapping (guard pages
 * included), so ~32k AES/HMAC versions reached vm.max_map_count (65530) and every later mmap in
 * the daemon failed. Symmetric material is now packed into shared locked chunks. This test makes
 * 40,000 AES-256 versions through the vault API (one key rotated 20,000 times and 20,000 keys),
 * checks that the process gains far fewer than 1000 mappings (it was 2-3 per version), that the
 * keys still encrypt and decrypt (latest and oldest version), and that deleting the keys gives
 * the slots back.
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

#define N_ROTATIONS 20000u
#define N_KEYS 20000u

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

static void test_40k_aes_versions(void **state) {
    static const uint8_t msg[] = "packed symmetric key material";
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    _cleanup_free_ uint8_t *ct1 = NULL;
    SecretPackedStats s0, s1, s2;
    size_t maps0, maps1, maps2, ct1_len = 0;
    unsigned long lck0, lck1;
    uint32_t ver = 0;
    char name[32];
    Vault *v = NULL;

    assert_int_equal(vault_new(&v), 0);
    maps0 = count_maps();
    lck0 = locked_kib();
    s0 = secret_packed_stats();

    assert_int_equal(vault_key_generate(v, &alice, "rotated", &spec), 0);
    assert_int_equal(vault_encrypt(v, &alice, "rotated", &op, msg, sizeof msg, &ct1, &ct1_len), 0);
    for (unsigned i = 1; i < N_ROTATIONS; i++) {
        assert_int_equal(vault_key_rotate(v, &alice, "rotated", &ver), 0);
        assert_int_equal(ver, i + 1);
    }
    for (unsigned i = 0; i < N_KEYS; i++) {
        snprintf(name, sizeof name, "k%05u", i);
        assert_int_equal(vault_key_generate(v, &alice, name, &spec), 0);
    }

    maps1 = count_maps();
    lck1 = locked_kib();
    s1 = secret_packed_stats();
    print_message("40000 AES-256 versions: mappings %zu -> %zu (+%zu), VmLck %lu -> %lu KiB, "
                  "packed chunks %zu, slots used %zu, locked %zu bytes, mapped %zu bytes\n",
                  maps0, maps1, maps1 - maps0, lck0, lck1, s1.chunks, s1.slots_used,
                  s1.bytes_locked, s1.bytes_mapped);
    assert_true(maps1 < maps0 + 1000);
    assert_int_equal(s1.slots_used - s0.slots_used, N_ROTATIONS + N_KEYS);
    /* 64-byte slots: 40,000 x 64 = 2.5 MiB, in chunks of at most 1 MiB. */
    assert_true(s1.bytes_locked <= s0.bytes_locked + 4u * 1024 * 1024);
    assert_true(s1.chunks <= s0.chunks + 16);
    assert_int_equal(secret_packed_cost(32), 64);

    /* Still usable: the latest version, the first version (envelope names version 1), keys. */
    roundtrip(v, "rotated", NULL, 0);
    roundtrip(v, "rotated", ct1, ct1_len);
    roundtrip(v, "k00000", NULL, 0);
    roundtrip(v, "k19999", NULL, 0);
    /* A new mapping still works (the daemon's other allocations). */
    {
        _cleanup_(secret_freep) Secret *page = NULL;
        assert_int_equal(secret_new(4096, &page), 0);
    }

    /* Deleting gives the slots back and unmaps emptied chunks. */
    assert_int_equal(vault_key_delete(v, &alice, "rotated"), 0);
    for (unsigned i = 0; i < N_KEYS; i++) {
        snprintf(name, sizeof name, "k%05u", i);
        assert_int_equal(vault_key_delete(v, &alice, name), 0);
    }
    s2 = secret_packed_stats();
    maps2 = count_maps();
    assert_int_equal(s2.slots_used, s0.slots_used);
    assert_true(s2.chunks <= s0.chunks + 1);
    assert_true(maps2 <= maps1);
    vault_free(v);
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
