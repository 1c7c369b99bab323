/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/secret.h"

/* Returns the VmFlags line of the mapping containing p from /proc/self/smaps. */
static int smaps_flags_for(const void *p, char *flags, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "re");
    char line[512];
    int in = 0;
    uintptr_t a = (uintptr_t)p;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = a >= lo && a < hi;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, n, "%s", line);
            fclose(f);
            return 0;
        }
    }
    fclose(f);
    return -1;
}

static void test_secret_locked_dontdump(void **state) {
    _cleanup_(secret_freep) Secret *s = NULL;
    char flags[512];
    assert_int_equal(secret_new(100, &s), 0);
    assert_int_equal(secret_size(s), 100);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(secret_data(s)[i], 0);
    assert_true(secret_is_locked(s));
    assert_int_equal(smaps_flags_for(secret_data(s), flags, sizeof flags), 0);
#ifndef __SANITIZE_ADDRESS__
    /* ASan intercepts mlock() as a no-op (it would pin the shadow), so only check it without. */
    assert_non_null(strstr(flags, " lo"));
#endif
    assert_non_null(strstr(flags, " dd"));
}

static void test_secret_guard_page(void **state) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        Secret *s = NULL;
        struct rlimit rl = {0, 0};
        (void)setrlimit(RLIMIT_CORE, &rl);
        (void)signal(SIGSEGV, SIG_DFL); /* cmocka's handler would turn the fault into an exit */
        if (secret_new(16, &s) < 0)
            _exit(3);
        /* Touch the page before the mapping's data: must fault. */
        volatile uint8_t *p = (uint8_t *)secret_data(s) - 4096;
        (void)*p;
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
}

static void test_secret_copy_truncate(void **state) {
    _cleanup_(secret_freep) Secret *s = NULL;
    assert_int_equal(secret_new_copy("hello world", 11, &s), 0);
    assert_memory_equal(secret_data(s), "hello world", 11);
    secret_truncate(s, 5);
    assert_int_equal(secret_size(s), 5);
    assert_int_equal(secret_data(s)[5], 0);
}

static void test_secret_oom(void **state) {
    Secret *s = NULL;
    nt_alloc_fail_after(0);
    assert_int_equal(secret_new(8, &s), -ENOMEM);
    nt_alloc_fail_after(-1);
    assert_null(s);
    assert_null(secret_free(NULL));
}

static void test_harden(void **state) {
    struct rlimit rl;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (nt_harden_process() < 0)
            _exit(1);
        if (prctl(PR_GET_DUMPABLE) != 0)
            _exit(2);
        if (getrlimit(RLIMIT_CORE, &rl) < 0 || rl.rlim_cur != 0)
            _exit(3);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- packed secrets ---- */

static size_t ps(void) {
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* Start of the slot holding s (the header precedes the data). */
static uint8_t *slot_of(Secret *s) {
    return secret_data(s) - SECRET_PACKED_HEADER;
}

/* Bounds and permissions ("rw-p", "---p") of the mapping containing p, from /proc/self/maps. */
static int maps_find(uintptr_t p, uintptr_t *ret_lo, uintptr_t *ret_hi, char perms[5]) {
    FILE *f = fopen("/proc/self/maps", "re");
    char line[512];
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char pr[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, pr) == 3 && p >= lo && p < hi) {
            *ret_lo = lo;
            *ret_hi = hi;
            memcpy(perms, pr, 5);
            fclose(f);
            return 0;
        }
    }
    fclose(f);
    return -1;
}

static void test_packed_sizes(void **state) {
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(0), 64);
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(32), 64);
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(33), 128);
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(48), 128);
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(96), 128);
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(97), 256);
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(224), 256);
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(225), 0);
    assert_int_equal(SECRET_PACKED_SLOT_SIZE(SIZE_MAX), 0);
    assert_int_equal(secret_packed_cost(32), 64);
    assert_int_equal(secret_packed_cost(64), 128);
    assert_int_equal(secret_packed_cost(224), 256);
    assert_int_equal(secret_packed_cost(225), ps());
    assert_int_equal(secret_packed_cost(ps()), 2 * ps());
    assert_int_equal(secret_packed_cost(SIZE_MAX), SIZE_MAX);
}

static void test_packed_alloc_free_reuse(void **state) {
    _cleanup_(secret_freep) Secret *big = NULL;
    Secret *a = NULL, *b = NULL, *c = NULL;
    SecretPackedStats s0 = secret_packed_stats(), s1;
    char flags[512];
    uint8_t *slot_a;

    assert_int_equal(secret_new_packed(32, &a), 0);
    assert_int_equal(secret_size(a), 32);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(secret_data(a)[i], 0);
    assert_true(secret_is_locked(a));
    assert_int_equal(smaps_flags_for(secret_data(a), flags, sizeof flags), 0);
#ifndef __SANITIZE_ADDRESS__
    assert_non_null(strstr(flags, " lo"));
#endif
    assert_non_null(strstr(flags, " dd"));
    assert_non_null(strstr(flags, " wf"));

    /* Two secrets of one class are neighbours in one chunk, not one mapping each. */
    assert_int_equal(secret_new_packed_copy("0123456789abcdef0123456789abcdef", 32, &b), 0);
    assert_memory_equal(secret_data(b), "0123456789abcdef0123456789abcdef", 32);
    s1 = secret_packed_stats();
    assert_int_equal(s1.slots_used, s0.slots_used + 2);
    assert_true(s1.chunks <= s0.chunks + 1);
    {
        uintptr_t lo_a, hi_a, lo_b, hi_b;
        char pa[5], pb[5];
        assert_int_equal(maps_find((uintptr_t)secret_data(a), &lo_a, &hi_a, pa), 0);
        assert_int_equal(maps_find((uintptr_t)secret_data(b), &lo_b, &hi_b, pb), 0);
        assert_true(lo_a == lo_b && hi_a == hi_b);
    }
    /* Writing all of a does not touch b. */
    memset(secret_data(a), 0xAA, 32);
    assert_memory_equal(secret_data(b), "0123456789abcdef0123456789abcdef", 32);
    secret_truncate(b, 5);
    assert_int_equal(secret_size(b), 5);
    assert_int_equal(secret_data(b)[5], 0);

    /* A freed slot is reused (lowest free slot first). */
    slot_a = slot_of(a);
    assert_null(secret_free(a));
    assert_int_equal(secret_new_packed(16, &c), 0);
    assert_ptr_equal(slot_of(c), slot_a);
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(secret_data(c)[i], 0);

    /* Other classes, and the fallback to a page secret for large sizes. */
    {
        Secret *m = NULL, *l = NULL;
        assert_int_equal(secret_new_packed(48, &m), 0);
        assert_int_equal(secret_new_packed(200, &l), 0);
        memset(secret_data(l), 0x55, 200);
        assert_int_equal(secret_packed_stats().slots_used, s0.slots_used + 4);
        secret_free(m);
        secret_free(l);
    }
    assert_int_equal(secret_new_packed(225, &big), 0);
    assert_int_equal(secret_size(big), 225);
    assert_true(((uintptr_t)secret_data(big) & (ps() - 1)) == SECRET_PACKED_HEADER);
    assert_int_equal(secret_packed_stats().slots_used, s0.slots_used + 2);

    secret_free(b);
    secret_free(c);
    assert_int_equal(secret_packed_stats().slots_used, s0.slots_used);
}

static void test_packed_wipe_on_free(void **state) {
    Secret *a = NULL, *keep = NULL;
    uint8_t *slot;

    /* keep holds the chunk mapped, so the freed slot can be read back. */
    assert_int_equal(secret_new_packed(32, &keep), 0);
    assert_int_equal(secret_new_packed(32, &a), 0);
    memset(secret_data(a), 0xA5, 32);
    slot = slot_of(a);
    secret_free(a);
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(slot[i], 0);

    /* The same for a 256-byte slot. */
    assert_int_equal(secret_new_packed(224, &a), 0);
    memset(secret_data(a), 0x5A, 224);
    slot = slot_of(a);
    {
        Secret *keep2 = NULL;
        assert_int_equal(secret_new_packed(224, &keep2), 0);
        secret_free(a);
        for (size_t i = 0; i < 256; i++)
            assert_int_equal(slot[i], 0);
        secret_free(keep2);
    }
    secret_free(keep);
}

static int touch_in_child(const volatile uint8_t *p) {
    int status = 0;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {0, 0};
        (void)setrlimit(RLIMIT_CORE, &rl);
        (void)signal(SIGSEGV, SIG_DFL);
        (void)*p;
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) ? WTERMSIG(status) : -1;
}

static void test_packed_guard_pages(void **state) {
    _cleanup_(secret_freep) Secret *a = NULL;
    SecretPackedStats st;
    uintptr_t lo, hi, glo, ghi;
    char perms[5];

    assert_int_equal(secret_new_packed(32, &a), 0);
    /* The chunk is one read-write mapping with a PROT_NONE page on either side. */
    assert_int_equal(maps_find((uintptr_t)secret_data(a), &lo, &hi, perms), 0);
    assert_string_equal(perms, "rw-p");
    assert_int_equal(maps_find(lo - 1, &glo, &ghi, perms), 0);
    assert_string_equal(perms, "---p");
    assert_int_equal(maps_find(hi, &glo, &ghi, perms), 0);
    assert_string_equal(perms, "---p");
    assert_int_equal(touch_in_child((const uint8_t *)lo - 1), SIGSEGV);
    assert_int_equal(touch_in_child((const uint8_t *)hi), SIGSEGV);
    assert_int_equal(touch_in_child((const uint8_t *)lo), -1);

    st = secret_packed_stats();
    assert_true(st.chunks > 0);
    assert_int_equal(st.bytes_mapped, st.bytes_locked + 2 * ps() * st.chunks);
}

static void test_packed_chunks_grow_and_unmap(void **state) {
    enum { N = 20000 };
    SecretPackedStats s0 = secret_packed_stats(), s1, s2;
    Secret **v = calloc(N, sizeof(Secret *));

    assert_non_null(v);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(secret_new_packed(32, &v[i]), 0);
        memcpy(secret_data(v[i]), &i, sizeof i);
    }
    s1 = secret_packed_stats();
    /* 20,000 x 64 bytes in chunks of 16 KiB, 32 KiB, ... 1 MiB: 7 chunks at most, 1.3 MiB. */
    assert_int_equal(s1.slots_used, s0.slots_used + N);
    assert_true(s1.chunks <= s0.chunks + 7);
    assert_true(s1.bytes_locked <= s0.bytes_locked + 2u * 1024 * 1024);
    for (size_t i = 0; i < N; i++) {
        assert_memory_equal(secret_data(v[i]), &i, sizeof i);
        secret_free(v[i]);
    }
    free(v);
    s2 = secret_packed_stats();
    assert_int_equal(s2.slots_used, s0.slots_used);
    /* Empty chunks are unmapped, one per class may stay. */
    assert_true(s2.chunks <= s0.chunks + 1);
    assert_true(s2.bytes_locked <= s0.bytes_locked + 1024 * 1024);
}

#define T_THREADS 4
#define T_LIVE 64
#define T_ROUNDS 5000

static void *packed_worker(void *arg) {
    uint8_t tag = (uint8_t)(uintptr_t)arg;
    Secret *live[T_LIVE] = {0};
    unsigned seed = tag;
    uintptr_t bad = 0;

    for (int round = 0; round < T_ROUNDS; round++) {
        size_t i = (size_t)rand_r(&seed) % T_LIVE;
        if (live[i]) {
            /* Nobody else wrote into our slot: the pattern is intact. */
            for (size_t k = 0; k < secret_size(live[i]); k++)
                if (secret_data(live[i])[k] != (uint8_t)(tag + k))
                    bad++;
            live[i] = secret_free(live[i]);
        } else {
            static const size_t sizes[] = {8, 32, 48, 96, 200};
            size_t n = sizes[(size_t)rand_r(&seed) % ELEMENTSOF(sizes)];
            if (secret_new_packed(n, &live[i]) < 0)
                return (void *)(uintptr_t)-1;
            for (size_t k = 0; k < n; k++) {
                if (secret_data(live[i])[k] != 0)
                    bad++; /* a slot handed out twice, or not wiped */
                secret_data(live[i])[k] = (uint8_t)(tag + k);
            }
        }
    }
    for (size_t i = 0; i < T_LIVE; i++)
        secret_free(live[i]);
    return (void *)bad;
}

static void test_packed_threads(void **state) {
    pthread_t t[T_THREADS];
    SecretPackedStats s0 = secret_packed_stats();

    for (uintptr_t i = 0; i < T_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, packed_worker, (void *)(i * 37 + 1)), 0);
    for (int i = 0; i < T_THREADS; i++) {
        void *res = NULL;
        assert_int_equal(pthread_join(t[i], &res), 0);
        assert_ptr_equal(res, NULL);
    }
    assert_int_equal(secret_packed_stats().slots_used, s0.slots_used);
}

static void test_packed_fork_wipes(void **state) {
    _cleanup_(secret_freep) Secret *a = NULL;
    int status = 0;
    pid_t pid;

    assert_int_equal(secret_new_packed(32, &a), 0);
    memset(secret_data(a), 0xC3, 32);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const volatile uint8_t *p = slot_of(a);
        Secret *n = NULL;
        /* MADV_WIPEONFORK: the child sees the slot (header included) as zeros. */
        for (size_t i = 0; i < 64; i++)
            if (p[i] != 0)
                _exit(2);
        /* Freeing the emptied secret is harmless; the pool still works in the child. */
        secret_free(a);
        if (secret_new_packed_copy("x", 1, &n) < 0 || secret_data(n)[0] != 'x')
            _exit(3);
        secret_free(n);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(secret_data(a)[i], 0xC3);
}

/* A freed page secret's mapping is wiped and kept for the next secret of its size (no munmap,
 * mmap, mlock per operation): reused at the same address, all zero, still locked and not
 * dumped, with its guard pages; bounded (16), never for another size, forgotten in a child. */
static void test_page_secret_kept(void **state) {
    Secret *a = NULL, *b = NULL, *many[24] = {NULL};
    size_t n0, ps = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo, hi;
    char flags[512], perms[5];
    volatile const uint8_t *old;
    int status = 0;
    pid_t pid;

    /* Start from an empty cache: take what earlier tests left. */
    for (size_t i = 0; i < 24; i++)
        assert_int_equal(secret_new(100, &many[i]), 0);
    for (size_t i = 0; i < 24; i++)
        many[i] = secret_free(many[i]);
    assert_int_equal(secret_kept_count(), 16);
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(secret_new(100, &many[i]), 0);
    n0 = secret_kept_count();
    assert_int_equal(n0, 0);

    assert_int_equal(secret_new(100, &a), 0);
    memset(secret_data(a), 0xA5, 100);
    old = secret_data(a);
    secret_free(a);
    assert_int_equal(secret_kept_count(), 1);
    /* Still mapped, wiped (header and data), locked and not dumped. */
    assert_int_equal(maps_find((uintptr_t)old, &lo, &hi, perms), 0);
    assert_int_equal(hi - lo, ps);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(old[i], 0);
    assert_int_equal(smaps_flags_for((const void *)old, flags, sizeof flags), 0);
#ifndef __SANITIZE_ADDRESS__
    assert_non_null(strstr(flags, " lo"));
#endif
    assert_non_null(strstr(flags, " dd"));
    /* Not for another size (two pages)... */
    assert_int_equal(secret_new(ps, &b), 0);
    assert_true(secret_data(b) != old);
    assert_int_equal(secret_kept_count(), 1);
    b = secret_free(b);
    assert_int_equal(secret_kept_count(), 2);
    /* ...reused for its own: same address, zero, its guard pages around it. */
    assert_int_equal(secret_new(200, &a), 0);
    assert_ptr_equal(secret_data(a), old);
    assert_int_equal(secret_size(a), 200);
    for (size_t i = 0; i < 200; i++)
        assert_int_equal(secret_data(a)[i], 0);
    assert_true(secret_is_locked(a));
    assert_int_equal(maps_find(lo - 1, &lo, &hi, perms), 0);
    assert_string_equal(perms, "---p");
    assert_int_equal(secret_kept_count(), 1);

    /* A forked child does not reuse the parent's kept mappings (its pages are not locked). */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(secret_kept_count() == 0 ? 0 : 1);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    secret_free(a);
    for (size_t i = 0; i < 16; i++)
        secret_free(many[i]);
    assert_int_equal(secret_kept_count(), 16);
}

static void test_packed_oom(void **state) {
    Secret *s = NULL;
    nt_alloc_fail_after(0);
    assert_int_equal(secret_new_packed(8, &s), -ENOMEM);
    assert_int_equal(secret_new_packed(4000, &s), -ENOMEM);
    nt_alloc_fail_after(-1);
    assert_null(s);
    assert_int_equal(secret_new_packed(8, NULL), -EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_locked_dontdump),
        cmocka_unit_test(test_secret_guard_page),
        cmocka_unit_test(test_secret_copy_truncate),
        cmocka_unit_test(test_secret_oom),
        cmocka_unit_test(test_harden),
        cmocka_unit_test(test_packed_sizes),
        cmocka_unit_test(test_packed_alloc_free_reuse),
        cmocka_unit_test(test_packed_wipe_on_free),
        cmocka_unit_test(test_packed_guard_pages),
        cmocka_unit_test(test_packed_chunks_grow_and_unmap),
        cmocka_unit_test(test_packed_threads),
        cmocka_unit_test(test_packed_fork_wipes),
        cmocka_unit_test(test_packed_oom),
        cmocka_unit_test(test_page_secret_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
